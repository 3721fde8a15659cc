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


def write_activation_depth(out_dir: Path, modules: list[dict], limit: float) -> Path:
    """log10 max |output| of each module in execution order beside log10 of FP16's max, so the
    plot shows where along the network activations approach the limit. Modules whose outputs are
    all zero have no logarithm and no row; nothing measured gives a header-only CSV."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "activations.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "module", "log10_max_abs", "log10_fp16_max"])
        for step, figures in enumerate(modules):
            if figures["max_abs"] > 0:
                writer.writerow([step, figures["module"] or "<model>", f"{np.log10(figures['max_abs']):.6g}",
                                 f"{np.log10(limit):.6g}"])
    return path
