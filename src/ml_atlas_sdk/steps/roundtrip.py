"""The full round-trip of the accepted model over every validation row, localized when it fails."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.checks import run_check
from ml_atlas_sdk.checks.result import Verdict
from ml_atlas_sdk.localize.report import not_run, without_trail
from ml_atlas_sdk.reports import StageReport
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.tensors import row_count

if TYPE_CHECKING:
    import torch


def roundtrip_model(
    onnx_path: Path,
    inputs: dict[str, np.ndarray],
    canonical: dict[str, np.ndarray],
    settings: Settings,
    export_rows: int,
    get_model: Callable[[], "torch.nn.Module"] | None = None,
    reused: rt.OrtRun | None = None,
) -> tuple[StageReport, dict[str, np.ndarray]]:
    """Returns the report and ORT's outputs (for error plots).

    `reused`: the export's run of this very model on these inputs (its accepted attempt was judged
    by it), so ORT runs over the rows once per pipeline; None runs it here. A failed verdict is
    localized with the model `get_model` returns (called only then, so a passing round-trip never
    builds it), unless the reused run comes with the export's localization of the same failure;
    report.extra["localization"] says what was found.
    """
    metadata, skip = settings.metadata, settings.checks.policy
    tol, rows_per_run, localize_rows = settings.roundtrip.tolerance, settings.roundtrip.batch_size, settings.roundtrip.localize_rows
    report = StageReport("roundtrip")
    if "roundtrip" in skip:
        report.add(run_check("roundtrip", {}, tol, skip=skip))
        report.extra = {"localization": not_run("the roundtrip check is skipped")}
        return report, {}
    names = (metadata.input_names, metadata.output_names)
    run = reused or rt.run_and_probe(onnx_path, inputs, canonical, names, rows_per_run, export_rows, tol, progress=True)
    actual, probe, rows = run.outputs, run.batch_probe, row_count(inputs)
    per_output = rt.compare(actual, canonical, tol)
    result = run_check("roundtrip", per_output, tol, probe, skip=skip)
    localization = not_run("the round-trip passed")
    if result.verdict is Verdict.FAILED:
        if run.localization is not None:
            localization = run.localization
        elif get_model is None:
            localization = not_run("no model to compare with")
        else:  # torch and the exporters' graph tools load only here, for a failure
            from ml_atlas_sdk.localize.locate import localize_failure

            localization = localize_failure(get_model, onnx_path, inputs, actual, canonical, metadata, tol, localize_rows)
        result = run_check("roundtrip", per_output, tol, probe, localization=without_trail(localization), skip=skip)
    report.add(result)
    report.metrics = {"rows": rows, "rows_per_run": rows_per_run, "ort_outputs_reused": reused is not None,
                      "outputs": per_output,
                      "localization_seconds": localization.get("seconds", 0.0)}
    report.extra = {"localization": localization}
    return report, actual
