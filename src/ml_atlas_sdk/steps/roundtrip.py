"""The full round-trip of the accepted model over every validation row, localized when it fails,
and the accepted model at other sizes of every dynamic axis (`dynamic_axes`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml_atlas_sdk import axis_probe
from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.checks import run_check
from ml_atlas_sdk.checks.registry import result_from_finding
from ml_atlas_sdk.checks.result import Finding, Verdict
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
    hazards: Sequence[str] = (),
    axis_raw: list[dict] | None = None,
) -> tuple[StageReport, dict[str, np.ndarray]]:
    """Returns the report and ORT's outputs (for error plots).

    `reused`: the export's run of this very model on these inputs (its accepted attempt was judged
    by it), so ORT runs over the rows once per pipeline; None runs it here. A failed verdict is
    localized with the model `get_model` returns (called only then, so a passing round-trip never
    builds it), unless the reused run comes with the export's localization of the same failure;
    report.extra["localization"] says what was found. The dynamic-axis probes come with the reused
    run when the export made them; else they run here, with the model from `get_model`.
    """
    metadata, skip = settings.metadata, settings.checks.policy
    tol, rows_per_run, localize_rows = settings.roundtrip_tolerances, settings.roundtrip.batch_size, settings.roundtrip.localize_rows
    report = StageReport("roundtrip")
    if "roundtrip" in skip:
        report.add(run_check("roundtrip", {}, tol, skip=skip))
        report.add(_dynamic_axes(onnx_path, inputs, settings, None, get_model, hazards, None, axis_raw))
        report.extra = {"localization": not_run("the roundtrip check is skipped")}
        return report, {}
    names = (metadata.input_names, metadata.output_names)
    spreads = rt.spreads_of(canonical)
    run = reused or rt.run_and_probe(onnx_path, inputs, canonical, names, rows_per_run, export_rows, tol, progress=True,
                                     spreads=spreads)
    actual, probe, rows = run.outputs, run.batch_probe, row_count(inputs)
    per_output = rt.compare(actual, canonical, tol, spreads)
    result = run_check("roundtrip", per_output, tol, probe, hazards=hazards, skip=skip)
    localization = not_run("the round-trip passed")
    if result.verdict is Verdict.FAILED:
        if run.localization is not None:
            localization = run.localization
        elif get_model is None:
            localization = not_run("no model to compare with")
        else:  # torch and the exporters' graph tools load only here, for a failure
            from ml_atlas_sdk.localize.locate import localize_failure

            localization = localize_failure(get_model, onnx_path, inputs, actual, canonical, metadata,
                                            settings.roundtrip.tolerance, localize_rows)
        result = run_check("roundtrip", per_output, tol, probe, localization=without_trail(localization),
                           hazards=hazards, skip=skip)
    report.add(result)
    if result.verdict is Verdict.FAILED and "dynamic_axes" not in skip:  # other sizes would tell nothing more
        axes = report.add(result_from_finding("dynamic_axes", Finding(
            None, "not run: the round-trip fails at the data's own sizes", {"reason": "roundtrip_failed"})))
    else:
        axes = report.add(_dynamic_axes(onnx_path, inputs, settings, run.axis_probes, get_model, hazards, spreads,
                                        axis_raw))
    report.metrics = {"rows": rows, "rows_per_run": rows_per_run, "ort_outputs_reused": reused is not None,
                      "outputs": per_output, "dynamic_axes": axis_usage(axes.details.get("probes", [])),
                      "localization_seconds": localization.get("seconds", 0.0)}
    report.extra = {"localization": localization}
    return report, actual


def _dynamic_axes(onnx_path: Path, inputs, settings: Settings, probes: list[dict] | None,
                  get_model: Callable[[], "torch.nn.Module"] | None, hazards: Sequence[str],
                  spreads: dict[str, float] | None, axis_raw: list[dict] | None = None):
    """The dynamic_axes check: the export's probes of this model when it made them (judged again
    from what ran when the tolerances differ), else run here."""
    metadata, skip = settings.metadata, settings.checks.policy
    plan = axis_probe.planned_sizes(metadata, inputs, settings.checks.axis_sizes)
    lengths = axis_probe.data_lengths(metadata, inputs)
    if probes is None and axis_raw is not None and "dynamic_axes" not in skip:
        probes = [p.to_dict() for p in axis_probe.rejudge(axis_raw, metadata, settings.roundtrip_tolerances, spreads)]
    if probes is None and plan and "dynamic_axes" not in skip and get_model is not None:
        from ml_atlas_sdk.models import eager_reference  # torch, only when the export's probes cannot be reused

        print(f"[roundtrip] dynamic axes at other sizes: {', '.join(f'{a} {s}' for a, (s, _) in plan.items())}", flush=True)
        found = axis_probe.probe_all(onnx_path, metadata, inputs, plan, settings.roundtrip_tolerances,
                                     spreads or {}, eager_reference(get_model(), metadata), say=print)
        probes = [p.to_dict() for p in found]
    return run_check("dynamic_axes", probes, lengths, hazards, skip=skip)


def axis_usage(probes: Sequence[dict]) -> dict[str, float]:
    """{"<axis>=<size>": the worst output's tol_usage there} (inf where ORT or the shapes failed):
    how close each exercised size is to failing, for `dvc exp show` and the run's metrics."""
    usage = {}
    for p in probes:
        figures = [m.get("tol_usage", 0.0) for m in p.get("outputs", {}).values()]
        usage[f"{p['axis']}={p['size']}"] = max(figures, default=0.0) if p["status"] in ("ok", "mismatch") else float("inf")
    return usage
