"""Export with escalation, plus forward_scan before and onnx_cross_check after."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch

from ml_atlas_sdk import axis_probe
from ml_atlas_sdk.checks import run_check
from ml_atlas_sdk.checks.onnx_checks import model_opset
from ml_atlas_sdk.checks.result import Verdict
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.export.escalation import ExportAttempt, ExportOutcome, Judge, export_with_escalation
from ml_atlas_sdk.models import as_torch
from ml_atlas_sdk.reports import StageReport
from ml_atlas_sdk.settings import Settings


def print_attempt(attempt: ExportAttempt) -> None:
    changes = ", ".join(f"{k}={v}" for k, v in attempt.overrides.items()) or "configured settings"
    outcome = attempt.status if not attempt.error else f"{attempt.status}: {attempt.error}"
    print(f"  attempt {attempt.step} ({changes}; {attempt.seconds:.1f}s): {outcome}", flush=True)
    if attempt.localization is not None:
        print(f"    localized: {attempt.localization['message']}", flush=True)
    failed = [p for p in attempt.axis_probes or [] if p["status"] != "ok"]
    for probe in failed[1:]:  # the first is the attempt's error above
        print(f"    also {probe['message']}", flush=True)


def require_exported_model(outcome: ExportOutcome, where_logs_are: str) -> None:
    """Stop with one line when no attempt produced a model at all (nothing left to check)."""
    if outcome.chosen is None:
        tried = len([a for a in outcome.attempts if a.status != "duplicate"])
        raise AtlasInputError(f"export: none of {tried} attempt(s) produced an ONNX model "
                              f"(last error: {outcome.attempts[-1].error}); {where_logs_are}")


def judge_of(settings: Settings, inputs, hazards: list[str]) -> Judge:
    """The rules every export attempt is judged by: the roundtrip stage's, from the same settings."""
    metadata, roundtrip = settings.metadata, settings.roundtrip
    return Judge(
        tolerances=settings.roundtrip_tolerances, localize_tol=roundtrip.tolerance, rows_per_run=roundtrip.batch_size,
        localize_rows=roundtrip.localize_rows,
        axis_plan=axis_probe.planned_sizes(metadata, inputs, settings.checks.axis_sizes),
        probe_axes="dynamic_axes" not in settings.checks.policy, hazards=tuple(hazards),
    )


def export_settings_used(outcome: ExportOutcome, onnx_path: Path) -> dict[str, Any] | None:
    """The settings of the written model, with the opset it really has (dynamo may raise it)."""
    if outcome.chosen is None:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    return {**outcome.chosen.settings.to_dict(), "escalation_step": outcome.chosen.step, "model_opset": model_opset(model)}


def export_model(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    canonical: dict[str, torch.Tensor],
    settings: Settings,
    out_path: Path,
) -> tuple[ExportOutcome, StageReport]:
    """The configured export, then the ladder (settings.export_plan()), each attempt judged by the
    round-trip's rule (settings.roundtrip) and localized when it fails; checks.skip applies."""
    metadata, skip = settings.metadata, settings.checks.policy
    export, ladder = settings.export_plan()
    escalate = settings.escalation.enabled
    report = StageReport("export")
    inputs, canonical = as_torch(inputs), as_torch(canonical)
    scan = report.add(run_check("forward_scan", model, skip=skip))
    hazards = scan.details.get("warnings", []) if scan.verdict is Verdict.WARNED else []
    rows = next(iter(inputs.values())).shape[0]
    sample = max(2, min(export.batch_size, rows))
    print(f"[export] {1 + (len(ladder) if escalate else 0)} attempt(s) at most; export sample of {sample} of {rows} rows", flush=True)
    outcome = export_with_escalation(
        model, inputs, canonical, metadata, export, ladder, escalate, judge_of(settings, inputs, hazards), out_path,
        on_attempt=print_attempt,
    )
    if outcome.why_chosen:
        print(f"[export] chose attempt {outcome.chosen.step}: {outcome.why_chosen}", flush=True)
    chosen = outcome.chosen
    if chosen is not None:
        report.add(run_check("onnx_cross_check", out_path, metadata, chosen.settings.opset, inputs, skip=skip))
    report.metrics = {
        "accepted": outcome.accepted,
        "accepted_step": chosen.step if outcome.accepted else None,
        "attempts": len([a for a in outcome.attempts if a.status != "duplicate"]),
        "export_sample_rows": len(outcome.sample_rows),
    }
    report.extra = {
        "settings_used": export_settings_used(outcome, out_path),
        "why_chosen": outcome.why_chosen,
        "hazards": hazards,
        "export_sample_rows": outcome.sample_rows,
        "attempts": [a.to_dict() for a in outcome.attempts],
    }
    return outcome, report
