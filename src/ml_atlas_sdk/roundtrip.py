"""ONNX Runtime (CPU) against the canonical outputs: the numbers atlas will see."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding

REL_ERR_FLOOR = 1e-6  # keeps max_rel_err finite where the reference is exactly zero


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


def cpu_session(onnx_path: str | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's warnings are about graph rewrites, not about the user
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def run_onnx(
    session: ort.InferenceSession,
    inputs: dict[str, torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    batch_size: int,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run the session over all rows in batches of `batch_size`; outputs concatenated by name."""
    rows = next(iter(inputs.values())).shape[0]
    feeds = {n: inputs[n].numpy() for n in input_names}
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in output_names}
    starts = range(0, rows, batch_size)
    # disable=None: a bar on a terminal, nothing in CI logs or `dvc repro` captured output.
    for start in tqdm(starts, desc="onnxruntime", unit="batch", disable=None if progress else True, leave=False):
        feed = {n: v[start : start + batch_size] for n, v in feeds.items()}
        for name, value in zip(output_names, session.run(list(output_names), feed)):
            chunks[name].append(value)
    return {n: np.concatenate(chunks[n]) for n in output_names}


def error_metrics(actual: np.ndarray, reference: np.ndarray, tol: Tolerance) -> dict[str, float]:
    a = actual.astype(np.float64)
    r = reference.astype(np.float64)
    if a.shape != r.shape:
        return {"shape_mismatch": 1.0, "max_abs_err": float("inf"), "max_rel_err": float("inf"),
                "mean_abs_err": float("inf"), "frac_out_of_tol": 1.0}
    abs_err = np.abs(a - r)
    out_of_tol = abs_err > tol.atol + tol.rtol * np.abs(r)
    return {
        "max_abs_err": float(abs_err.max(initial=0.0)),
        "max_rel_err": float((abs_err / np.maximum(np.abs(r), REL_ERR_FLOOR)).max(initial=0.0)),
        "mean_abs_err": float(abs_err.mean()) if abs_err.size else 0.0,
        "frac_out_of_tol": float(out_of_tol.mean()) if out_of_tol.size else 0.0,
    }


def compare(
    actual: dict[str, np.ndarray], reference: dict[str, torch.Tensor], tol: Tolerance
) -> dict[str, dict[str, float]]:
    return {name: error_metrics(actual[name], reference[name].numpy(), tol) for name in reference}


@check("roundtrip")
def roundtrip(per_output: dict[str, dict[str, float]], tol: Tolerance, batch_probe: dict[str, str] | None = None) -> Finding:
    """Every output element within atol + rtol*|ref|; the batch axis works at other sizes."""
    details = {"rtol": tol.rtol, "atol": tol.atol, "outputs": per_output, "batch_probe": batch_probe or {}}
    bad = [
        f"{name}: {m['frac_out_of_tol']:.2%} of elements out of tolerance (max_abs_err {m['max_abs_err']:.3g})"
        if "shape_mismatch" not in m else f"{name}: ONNX output shape differs from the canonical one"
        for name, m in per_output.items()
        if m["frac_out_of_tol"] > 0
    ]
    bad += [f"batch size {size}: {error}" for size, error in (batch_probe or {}).items() if error != "ok"]
    if bad:
        return Finding(False, "; ".join(bad), details)
    worst = max(m["max_abs_err"] for m in per_output.values())
    return Finding(True, f"{len(per_output)} output(s) within rtol={tol.rtol}, atol={tol.atol} (max_abs_err {worst:.3g})", details)


def probe_batch_sizes(
    session: ort.InferenceSession,
    inputs: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    input_names: Sequence[str],
    sizes: Sequence[int],
    tol: Tolerance,
) -> dict[str, str]:
    """Run whole batches of other sizes than the export sample's: a specialised batch axis fails here."""
    outcome = {}
    for size in sizes:
        feed = {n: inputs[n][:size].numpy() for n in input_names}
        try:
            values = session.run(list(reference), feed)
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            outcome[str(size)] = str(exc).strip().splitlines()[0][:300]
            continue
        worst = max(error_metrics(v, reference[n][:size].numpy(), tol)["frac_out_of_tol"] for n, v in zip(reference, values))
        outcome[str(size)] = "ok" if worst == 0 else f"{worst:.2%} of elements out of tolerance"
    return outcome


def probe_sizes(rows: int, export_rows: int) -> list[int]:
    """Batch sizes that differ from the export sample's: 1 and export_rows+1 (capped at rows)."""
    sizes = {1, min(rows, export_rows + 1)}
    return sorted(s for s in sizes if s != export_rows)
