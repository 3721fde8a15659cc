"""DVC plot data: per-output error distributions as quantile curves (one CSV per output)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ml_atlas_sdk.run_record import Curve, error_curve


def write_error_quantiles(out_dir: Path, actual: dict[str, np.ndarray] | None, reference: dict[str, np.ndarray]) -> list[Path]:
    """|actual - reference| at each percentile, per output: the shape of the error, not just its max.

    Every reference output gets its CSV, with only the header when there is nothing to compare
    (no user outputs, a shape mismatch, no finite error): dvc.yaml declares the folder as a plot,
    so it must exist on every path through a stage and hold files `dvc plots show` accepts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, ref_tensor in reference.items():
        path = out_dir / f"{name}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["percentile", "abs_err"])
            for percentile, err in error_curve((actual or {}).get(name), np.asarray(ref_tensor)):
                writer.writerow([percentile, f"{err:.6g}"])
        written.append(path)
    return written


def read_error_quantiles(out_dir: Path) -> dict[str, Curve]:
    """The curves write_error_quantiles left, by output name (empty where a CSV has only its header)."""
    curves = {}
    for path in sorted(out_dir.glob("*.csv")) if out_dir.is_dir() else ():
        with open(path, newline="") as handle:
            curves[path.stem] = [(float(row["percentile"]), float(row["abs_err"])) for row in csv.DictReader(handle)]
    return curves


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
