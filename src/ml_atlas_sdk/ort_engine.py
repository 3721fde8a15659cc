"""ONNX Runtime (CPU) against the canonical outputs: the numbers atlas will see.

The engine only: sessions, batched runs, the batch-size probe and per-output error lines.
The verdict is the `roundtrip` check (checks/roundtrip.py); nothing here imports checks/.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from ml_atlas_sdk import mapped_pages
from ml_atlas_sdk.compare import Tolerance, compare_arrays, problem, spread_rms, tolerance_of
from ml_atlas_sdk.secrets import first_line

__all__ = ["ONNX", "PYTORCH", "OrtRun", "Tolerance", "Tolerances", "compare", "cpu_session", "probe_batch_sizes",
           "probe_sizes", "problems", "run_and_probe", "run_onnx", "spreads_of"]

# One Tolerance for every output, or {output: Tolerance} (roundtrip.tolerances over the global pair).
Tolerances = Tolerance | Mapping[str, Tolerance]

# The labels name the two sides in every message: "NaN in ONNX but finite in PyTorch".
ONNX, PYTORCH = "ONNX", "PyTorch"


def cpu_session(onnx_path: str | Path, probe: bool = False) -> ort.InferenceSession:
    """`probe`: for a few rows in a forked child (the dynamic-axis probes): one thread (the child has
    no pool threads of its parent's to wait on) and no graph rewrites, which cost more than a few
    rows and change no value; the graph as exported is what runs."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's warnings are about graph rewrites, not about the user
    if probe:
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def run_onnx(
    session: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    batch_size: int,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run the session over all rows in batches of `batch_size`, each output written into one array
    allocated at the first batch (the outputs are held once, not as chunks plus their concatenation).
    An output whose batches do not tile the rows (a batch axis that does not follow the rows, another
    axis that changes) is concatenated from its chunks instead, so the comparison sees its real shape."""
    rows = next(iter(inputs.values())).shape[0]
    feeds = {n: np.asarray(inputs[n]) for n in input_names}
    tiled: dict[str, np.ndarray] = {}
    chunks: dict[str, list[np.ndarray]] = {}
    starts = range(0, rows, batch_size)
    # disable=None: a bar on a terminal, nothing in CI logs or `dvc repro` captured output.
    for start in tqdm(starts, desc="onnxruntime", unit="batch", disable=None if progress else True, leave=False):
        feed = {n: v[start : start + batch_size] for n, v in feeds.items()}
        fed = min(batch_size, rows - start)
        for name, value in zip(output_names, session.run(list(output_names), feed)):
            if name in chunks:
                chunks[name].append(value)
                continue
            out = tiled.setdefault(name, np.empty((rows, *value.shape[1:]), value.dtype))
            if value.shape == (fed, *out.shape[1:]):
                out[start : start + fed] = value
            else:
                chunks[name] = [tiled.pop(name)[:start], value]
        mapped_pages.release(feed.values())
    return {n: tiled[n] if n in tiled else np.concatenate(chunks[n]) for n in output_names}


@dataclass
class OrtRun:
    """ORT's outputs over every validation row, and the batch-size probe, of one ONNX model."""

    outputs: dict[str, np.ndarray]
    batch_probe: dict[str, str]
    # Where the round-trip of these outputs starts to fail (ml_atlas_sdk.localize), when the export
    # already localized it: the roundtrip stage and the SDK take it instead of localizing again.
    localization: dict[str, Any] | None = None
    # The dynamic-axis probes of the same model (axis_probe.SizeProbe dicts), when the export ran them,
    # and what ran at each size (for judging again under other tolerances: axis_probe.rejudge).
    axis_probes: list[dict[str, Any]] | None = None
    axis_raw: list[dict[str, Any]] | None = None


def run_and_probe(
    onnx_path: str | Path,
    inputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    names: tuple[Sequence[str], Sequence[str]],
    rows_per_run: int,
    export_rows: int,
    tol: Tolerances,
    progress: bool = False,
    spreads: Mapping[str, float] | None = None,
) -> OrtRun:
    """The round-trip's ORT side: all rows in batches of `rows_per_run`, then the batch-size probe."""
    session = cpu_session(onnx_path)
    input_names, output_names = names
    outputs = run_onnx(session, inputs, input_names, output_names, rows_per_run, progress)
    rows = next(iter(inputs.values())).shape[0]
    spreads = spreads if spreads is not None else spreads_of(reference)
    probe = probe_batch_sizes(session, inputs, reference, input_names, probe_sizes(rows, export_rows), tol, spreads)
    return OrtRun(outputs, probe)


def spreads_of(reference: Mapping[str, Any]) -> dict[str, float]:
    """Each output's RMS spread across all rows: the scale the probes on a few rows are judged by."""
    return {name: spread_rms(values) for name, values in reference.items()}


def compare(
    actual: dict[str, np.ndarray], reference: dict[str, np.ndarray], tol: Tolerances,
    spreads: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    return {name: compare_arrays(actual[name], reference[name], tolerance_of(tol, name), (spreads or {}).get(name))
            for name in reference}


def problems(per_output: dict[str, dict[str, Any]], actual: str = ONNX, reference: str = PYTORCH) -> list[str]:
    """One line per output out of tolerance, naming non-finite mismatches with their counts."""
    return [line for name, m in per_output.items() if (line := problem(name, m, actual, reference))]


def probe_batch_sizes(
    session: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    input_names: Sequence[str],
    sizes: Sequence[int],
    tol: Tolerances,
    spreads: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """Run whole batches of other sizes than the export sample's: a specialised batch axis fails here."""
    outcome = {}
    for size in sizes:
        feed = {n: np.asarray(inputs[n][:size]) for n in input_names}
        try:
            values = session.run(list(reference), feed)
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            outcome[str(size)] = first_line(exc)
            continue
        bad = problems({n: compare_arrays(v, reference[n][:size], tolerance_of(tol, n), (spreads or {}).get(n))
                        for n, v in zip(reference, values)})
        outcome[str(size)] = "; ".join(bad) if bad else "ok"
    return outcome


def probe_sizes(rows: int, export_rows: int) -> list[int]:
    """Batch sizes that differ from the export sample's: 1 and export_rows+1 (capped at rows)."""
    sizes = {1, min(rows, export_rows + 1)}
    return sorted(s for s in sizes if s != export_rows)
