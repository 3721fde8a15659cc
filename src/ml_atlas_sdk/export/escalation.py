"""Walk the escalation ladder: export, round-trip, and step up until an attempt passes."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.checks.roundtrip import roundtrip
from ml_atlas_sdk.compare import worst
from ml_atlas_sdk.export.attempt import ExportFailed, export_onnx
from ml_atlas_sdk.export.sampling import select_export_rows
from ml_atlas_sdk.export.settings import ExportSettings, ladder_settings
from ml_atlas_sdk.localize.locate import localize_failure
from ml_atlas_sdk.localize.report import without_trail
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import check_forward
from ml_atlas_sdk.secrets import first_line
from ml_atlas_sdk.settings import RoundtripSettings
from ml_atlas_sdk.tensors import slice_rows


@dataclass
class ExportAttempt:
    step: int  # 0 = the configured export, k = ladder step k
    overrides: dict[str, Any]
    settings: ExportSettings
    status: str = "not_tried"  # passed | export_failed | roundtrip_failed | duplicate
    error: str | None = None
    log: str = ""
    roundtrip: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_probe: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    localization: dict[str, Any] | None = None  # where a failed round-trip starts (ml_atlas_sdk.localize)
    ort_run: rt.OrtRun | None = None  # kept for the chosen attempt only: the roundtrip step reuses it

    @property
    def worst_out_of_tol(self) -> float:
        # frac_out_of_tol counts NaN/Inf mismatches too, so "closest" never rewards NaN.
        return worst([m["frac_out_of_tol"] for m in self.roundtrip.values()]) if self.roundtrip else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "overrides": self.overrides, "settings": self.settings.to_dict(),
            "status": self.status, "error": self.error, "roundtrip": self.roundtrip,
            "batch_probe": self.batch_probe, "seconds": round(self.seconds, 2), "localization": self.localization,
            "log": self.log,
        }


@dataclass
class ExportOutcome:
    attempts: list[ExportAttempt]
    chosen: ExportAttempt | None  # the attempt whose model was written
    sample_rows: list[int]

    @property
    def accepted(self) -> bool:
        return self.chosen is not None and self.chosen.status == "passed"


def export_with_escalation(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    canonical: dict[str, torch.Tensor],
    metadata: ModelMetadata,
    settings: ExportSettings,
    ladder: Sequence[Mapping[str, Any]],
    escalate: bool,
    tol: rt.Tolerance,
    rows_per_run: int,
    out_path: Path,
    on_attempt: Callable[[ExportAttempt], None] = lambda a: None,
    localize_rows: int = RoundtripSettings().localize_rows,
) -> ExportOutcome:
    """Try the configured export, then each ladder step, until one exports and round-trips.

    If none passes but some exported, the closest one is written so the roundtrip stage can
    record its metrics (the upload gate refuses it); if none exported, nothing is written.
    Each attempt that fails the round-trip is localized on `localize_rows` failing rows: the
    attempts have distinct settings, so the ladder's length bounds the localizations.
    """
    sample_idx = select_export_rows(inputs, settings.batch_size)
    sample = slice_rows(inputs, sample_idx)
    check_forward(model, sample, metadata, sample_idx.tolist())  # a model that raises is not an export failure
    plan = [({}, settings)] + (ladder_settings(settings, ladder) if escalate else [])
    work = out_path.parent / ".attempts"
    shutil.rmtree(work, ignore_errors=True)
    attempts: list[ExportAttempt] = []
    seen: dict[ExportSettings, int] = {}
    for step, (overrides, step_settings) in enumerate(plan):
        attempt = ExportAttempt(step, overrides, step_settings)
        attempts.append(attempt)
        if step_settings in seen:
            attempt.status, attempt.error = "duplicate", f"same settings as attempt {seen[step_settings]}"
            on_attempt(attempt)
            continue
        seen[step_settings] = step
        _try(attempt, model, sample, inputs, canonical, metadata, tol, rows_per_run, work / f"attempt_{step}" / "model.onnx",
             localize_rows)
        on_attempt(attempt)
        chosen = _closest(attempts)
        for other in attempts:  # one attempt's outputs in memory at a time, beside the one that may be chosen
            if other is not chosen:
                other.ort_run = None
        if attempt.status == "passed":
            break
    chosen = _closest(attempts)
    if chosen is not None:
        _move_model(work / f"attempt_{chosen.step}", out_path)
    shutil.rmtree(work, ignore_errors=True)
    return ExportOutcome(attempts, chosen, sample_idx.tolist())


def _closest(attempts: list[ExportAttempt]) -> ExportAttempt | None:
    """The passed attempt, else the exported one closest to passing (its model is written so the
    roundtrip stage records its metrics; the upload gate refuses it)."""
    exported = [a for a in attempts if a.status in ("passed", "roundtrip_failed")]
    passed = next((a for a in exported if a.status == "passed"), None)
    return passed or (min(exported, key=lambda a: a.worst_out_of_tol) if exported else None)


def _try(attempt, model, sample, inputs, canonical, metadata, tol, rows_per_run, path: Path, localize_rows: int) -> None:
    started = time.perf_counter()
    try:
        log = export_onnx(model, sample, metadata, attempt.settings, path)
        attempt.log = log.full
    except ExportFailed as exc:
        attempt.status, attempt.error, attempt.log = "export_failed", exc.summary, exc.log
        attempt.seconds = time.perf_counter() - started
        return
    try:
        names = (metadata.input_names, metadata.output_names)
        run = rt.run_and_probe(path, inputs, canonical, names, rows_per_run, len(next(iter(sample.values()))), tol)
    except Exception as exc:  # ORT refuses graphs it cannot load or run: that is this attempt's failure
        attempt.status, attempt.error = "roundtrip_failed", f"onnxruntime: {first_line(exc)}"
        attempt.seconds = time.perf_counter() - started
        return
    attempt.ort_run, attempt.batch_probe, actual = run, run.batch_probe, run.outputs
    attempt.roundtrip = rt.compare(actual, canonical, tol)
    # The roundtrip check itself decides: one rule for acceptance here, in the stage and in verify.
    verdict = roundtrip(attempt.roundtrip, tol, attempt.batch_probe)
    attempt.status, attempt.error = ("passed", None) if verdict.ok else ("roundtrip_failed", verdict.message)
    if not verdict.ok:
        run.localization = localize_failure(lambda: model, path, inputs, actual, canonical, metadata, tol, localize_rows)
        attempt.localization = without_trail(run.localization)
    attempt.seconds = time.perf_counter() - started


def _move_model(attempt_dir: Path, out_path: Path) -> None:
    """Move model.onnx (and its external data, if any) into place, replacing what was there."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_path.parent.glob(out_path.name + "*"):
        stale.unlink()
    for produced in attempt_dir.iterdir():
        shutil.move(str(produced), out_path.parent / produced.name.replace("model.onnx", out_path.name, 1))
