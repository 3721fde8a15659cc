"""How well the INT8 calibration sample covers the validation data, input by input.

TensorRT calibrates one range per tensor from the calibration sample; validation values beyond it
are clipped in INT8. So per float input: the share of validation values outside the calibration
sample's [min, max], and the gap between a high quantile of |value| in each (a range fitted to
the calibration sample's tail falls short of the validation data's). Per integer input (ids): the
share of validation values whose id never occurs in the calibration sample, whose embeddings
calibration never saw.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

_TINY = 1e-12  # keeps the relative quantile gap finite for an all-zero calibration input


def coverage(validation: dict[str, torch.Tensor], calibration: dict[str, torch.Tensor],
             quantile: float) -> dict[str, dict[str, Any]]:
    """Per input present in both: its figures (see the module docstring)."""
    return {name: (_float_coverage if values.is_floating_point() else _id_coverage)(values, calibration[name], quantile)
            for name, values in validation.items() if name in calibration}


def _finite(t: torch.Tensor) -> np.ndarray:
    values = t.detach().double().numpy().ravel()
    return values[np.isfinite(values)]  # NaN/Inf are nan_inf's to report


def _float_coverage(val: torch.Tensor, cal: torch.Tensor, quantile: float) -> dict[str, Any]:
    v, c = _finite(val), _finite(cal)
    if v.size == 0 or c.size == 0:
        return {"kind": "float", "values": int(v.size), "outside_share": 0.0, "quantile_gap": 0.0}
    low, high = float(c.min()), float(c.max())
    val_q, cal_q = (float(np.quantile(np.abs(x), quantile)) for x in (v, c))
    return {
        "kind": "float", "values": int(v.size),
        "outside_share": float(((v < low) | (v > high)).mean()),
        "calibration_range": [low, high], "validation_range": [float(v.min()), float(v.max())],
        "quantile": quantile, "validation_quantile_abs": val_q, "calibration_quantile_abs": cal_q,
        "quantile_gap": max(val_q - cal_q, 0.0) / max(cal_q, _TINY),
    }


def _id_coverage(val: torch.Tensor, cal: torch.Tensor, quantile: float) -> dict[str, Any]:
    v, c = val.reshape(-1).long(), cal.reshape(-1).long()
    unseen = ~torch.isin(v, torch.unique(c))
    distinct = torch.unique(v)
    return {
        "kind": "ids", "values": int(v.numel()),
        "unseen_share": float(unseen.float().mean()) if v.numel() else 0.0,
        "unseen_ids": int(torch.unique(v[unseen]).numel()), "distinct_ids": int(distinct.numel()),
    }
