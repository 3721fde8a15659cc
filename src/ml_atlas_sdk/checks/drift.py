"""Drift: the user's own reference outputs against the canonical FP32-CPU ones."""
from __future__ import annotations

import numpy as np
import torch

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding

PCT_FLOOR = 1e-6  # keeps percentage errors finite where the canonical value is exactly zero
COSINE_MIN_LAST_AXIS = 8  # cosine similarity says little about very short vectors


def drift_metrics(user: torch.Tensor, canonical: torch.Tensor) -> dict[str, float]:
    u = user.double().numpy()
    c = canonical.double().numpy()
    diff = u - c
    abs_err = np.abs(diff)
    pct = 100.0 * abs_err / np.maximum(np.abs(c), PCT_FLOOR)
    metrics = {
        "mse": float(np.mean(diff**2)),
        "max_abs_err": float(abs_err.max(initial=0.0)),
        "mean_abs_err": float(abs_err.mean()),
        "max_pct_err": float(pct.max(initial=0.0)),
        "mean_pct_err": float(pct.mean()),
    }
    if c.ndim >= 2 and c.shape[-1] >= COSINE_MIN_LAST_AXIS:
        rows_u, rows_c = u.reshape(-1, c.shape[-1]), c.reshape(-1, c.shape[-1])
        norms = np.linalg.norm(rows_u, axis=1) * np.linalg.norm(rows_c, axis=1)
        metrics["cosine_sim"] = float(np.mean(np.sum(rows_u * rows_c, axis=1) / np.maximum(norms, 1e-12)))
    return metrics


def non_finite_counts(outputs: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: int((~torch.isfinite(t)).sum()) for n, t in outputs.items() if t.is_floating_point()}


@check("drift")
def drift(
    user_outputs: dict[str, torch.Tensor] | None,
    canonical: dict[str, torch.Tensor],
    tolerance_mse: float,
    tolerance_max_abs: float,
) -> Finding:
    if user_outputs is None:
        return Finding(None, "no user val_outputs supplied (data.val_outputs); nothing to compare", {"reason": "no_user_outputs"})
    details: dict = {"tolerance_mse": tolerance_mse, "tolerance_max_abs": tolerance_max_abs, "outputs": {}}
    bad_values = {n: c for n, c in non_finite_counts(user_outputs).items() if c}
    if bad_values:
        details["non_finite_counts"] = bad_values
        listed = ", ".join(f"{n!r} has {c} NaN/Inf value(s)" for n, c in bad_values.items())
        return Finding(False, f"user val_outputs: {listed}; drift cannot be measured", details)
    problems = []
    for name, ref in canonical.items():
        got = user_outputs[name]
        if got.shape != ref.shape:
            problems.append(f"{name!r}: user shape {list(got.shape)} vs canonical {list(ref.shape)}")
            continue
        metrics = drift_metrics(got, ref)
        details["outputs"][name] = metrics
        if metrics["mse"] > tolerance_mse or metrics["max_abs_err"] > tolerance_max_abs:
            problems.append(f"{name!r}: mse {metrics['mse']:.3g} (tolerance {tolerance_mse:g}), "
                            f"max_abs_err {metrics['max_abs_err']:.3g} (tolerance {tolerance_max_abs:g})")
    if problems:
        return Finding(False, "user val_outputs drift from canonical: " + "; ".join(problems), details)
    worst = max((m["max_abs_err"] for m in details["outputs"].values()), default=0.0)
    return Finding(True, f"{len(canonical)} output(s) within tolerance (max_abs_err {worst:.3g})", details)
