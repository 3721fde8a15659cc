"""DVC plot data: per-output error distributions as quantile curves (one CSV per output)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

QUANTILES = np.linspace(0.0, 1.0, 101)


def write_error_quantiles(out_dir: Path, actual: dict[str, np.ndarray], reference: dict[str, torch.Tensor]) -> list[Path]:
    """|actual - reference| at each percentile, per output: the shape of the error, not just its max."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, values in actual.items():
        ref = reference[name].numpy()
        if values.shape != ref.shape:
            continue
        errors = np.abs(values.astype(np.float64) - ref.astype(np.float64)).ravel()
        errors = errors[np.isfinite(errors)]
        if errors.size == 0:
            continue
        path = out_dir / f"{name}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["percentile", "abs_err"])
            for q, e in zip(QUANTILES, np.quantile(errors, QUANTILES)):
                writer.writerow([round(float(q) * 100, 1), f"{e:.6g}"])
        written.append(path)
    return written
