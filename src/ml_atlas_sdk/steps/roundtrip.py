"""The full round-trip of the accepted model over every validation row."""
from __future__ import annotations

from pathlib import Path

import torch

from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.checks import SkipPolicy, run_check
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.reports import StageReport


def roundtrip_model(
    onnx_path: Path,
    inputs: dict[str, torch.Tensor],
    canonical: dict[str, torch.Tensor],
    metadata: ModelMetadata,
    tol: rt.Tolerance,
    rows_per_run: int,
    export_rows: int,
    skip: SkipPolicy,
) -> tuple[StageReport, dict[str, "object"]]:
    """Returns the report and ORT's outputs (for error plots)."""
    report = StageReport("roundtrip")
    if "roundtrip" in skip:
        report.add(run_check("roundtrip", {}, tol, skip=skip))
        return report, {}
    session = rt.cpu_session(onnx_path)
    actual = rt.run_onnx(session, inputs, metadata.input_names, metadata.output_names, rows_per_run, progress=True)
    rows = next(iter(inputs.values())).shape[0]
    probe = rt.probe_batch_sizes(session, inputs, canonical, metadata.input_names, rt.probe_sizes(rows, export_rows), tol)
    per_output = rt.compare(actual, canonical, tol)
    report.add(run_check("roundtrip", per_output, tol, probe, skip=skip))
    report.metrics = {"rows": rows, "rows_per_run": rows_per_run, "outputs": per_output}
    return report, actual
