"""DVC plot data: per-output error distributions as quantile curves (one CSV per output)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

QUANTILES = np.linspace(0.0, 1.0, 101)


def write_error_quantiles(out_dir: Path, actual: dict[str, np.ndarray] | None, reference: dict[str, torch.Tensor]) -> list[Path]:
    """|actual - reference| at each percentile, per output: the shape of the error, not just its max.

    Every reference output gets its CSV, with only the header when there is nothing to compare
    (no user outputs, a shape mismatch, no finite error): dvc.yaml declares the folder as a plot,
    so it must exist on every path through a stage and hold files `dvc plots show` accepts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, ref_tensor in reference.items():
        quantiles = _error_quantiles((actual or {}).get(name), ref_tensor.numpy())
        path = out_dir / f"{name}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["percentile", "abs_err"])
            for q, e in quantiles:
                writer.writerow([round(float(q) * 100, 1), f"{e:.6g}"])
        written.append(path)
    return written


def _error_quantiles(values: np.ndarray | None, ref: np.ndarray) -> list[tuple[float, float]]:
    if values is None or values.shape != ref.shape:
        return []
    errors = np.abs(values.astype(np.float64) - ref.astype(np.float64)).ravel()
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        return []
    return list(zip(QUANTILES, np.quantile(errors, QUANTILES)))


LOCALIZATION_COLUMNS = ("depth", "frac_out_of_tol", "max_abs_err", "non_finite_mismatch", "out_of_tol", "atol", "module",
                        "onnx_node", "op_type")


def write_localization(out_dir: Path, localization: dict) -> Path:
    """Error along the network's depth: one row per module output compared in graph order
    (`frac_out_of_tol` stays 0 until the first divergence). Header only when nothing was localized."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "error_by_depth.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, LOCALIZATION_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(localization.get("trail", []))
    return path
