"""Walk the escalation ladder: export, judge (round-trip, then every dynamic axis at other sizes),
and step up until an attempt passes.

When forward_scan warned of a trace hazard and a TorchScript attempt passes anyway (a frozen
`.item()` can stay inside tolerance at the sizes probed), the ladder's dynamo step is tried too
and preferred when it passes every check: it traces symbolically, so what it exports does not
hang on the sample's values.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ml_atlas_sdk import axis_probe
from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.checks.dynamic_axes import likely_cause
from ml_atlas_sdk.checks.roundtrip import roundtrip
from ml_atlas_sdk.compare import Tolerance, worst
from ml_atlas_sdk.export.attempt import ExportFailed, export_onnx
from ml_atlas_sdk.export.sampling import select_export_rows
from ml_atlas_sdk.export.settings import ExportSettings, ladder_settings
from ml_atlas_sdk.localize.locate import localize_failure
from ml_atlas_sdk.localize.report import without_trail
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import check_forward, eager_reference
from ml_atlas_sdk.secrets import first_line
from ml_atlas_sdk.tensors import slice_rows


@dataclass(frozen=True)
class Judge:
    """How every attempt is judged, the same rules as the roundtrip stage's checks."""

    tolerances: Mapping[str, Tolerance]  # per output
    localize_tol: Tolerance  # the global pair, for values inside the network
    rows_per_run: int
    localize_rows: int
    axis_plan: Mapping[str, tuple[list[int], bool]] = field(default_factory=dict)  # axis_probe.planned_sizes
    probe_axes: bool = True  # False when dynamic_axes is skipped
    hazards: tuple[str, ...] = ()  # forward_scan's warnings


@dataclass
class ExportAttempt:
    step: int  # 0 = the configured export, k = ladder step k
    overrides: dict[str, Any]
    settings: ExportSettings
    status: str = "not_tried"  # passed | export_failed | roundtrip_failed | axes_failed | duplicate
    error: str | None = None
    log: str = ""
    roundtrip: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_probe: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    localization: dict[str, Any] | None = None  # where a failed round-trip starts (ml_atlas_sdk.localize)
    axis_probes: list[dict[str, Any]] | None = None  # axis_probe.SizeProbe dicts; None = not probed
    ort_run: rt.OrtRun | None = None  # kept for the chosen attempt only: the roundtrip step reuses it

    @property
    def worst_out_of_tol(self) -> float:
        # frac_out_of_tol counts NaN/Inf mismatches too, so "closest" never rewards NaN.
        return worst([m["frac_out_of_tol"] for m in self.roundtrip.values()]) if self.roundtrip else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "overrides": self.overrides, "settings": self.settings.to_dict(),
            "status": self.status, "error": self.error, "roundtrip": self.roundtrip,
            "batch_probe": self.batch_probe, "axis_probes": self.axis_probes, "seconds": round(self.seconds, 2),
            "localization": self.localization, "log": self.log,
        }


@dataclass
class ExportOutcome:
    attempts: list[ExportAttempt]
    chosen: ExportAttempt | None  # the attempt whose model was written
    sample_rows: list[int]
    why_chosen: str = ""

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
    judge: Judge,
    out_path: Path,
    on_attempt: Callable[[ExportAttempt], None] = lambda a: None,
) -> ExportOutcome:
    """Try the configured export, then each ladder step, until one exports and passes the judge.

    If none passes but some exported, the closest one is written so the roundtrip stage can
    record its metrics (the upload gate refuses it); if none exported, nothing is written.
    Each attempt that fails the round-trip is localized on `judge.localize_rows` failing rows: the
    attempts have distinct settings, so the ladder's length bounds the localizations.
    """
    sample_idx = select_export_rows(inputs, settings.batch_size)
    sample = slice_rows(inputs, sample_idx)
    check_forward(model, sample, metadata, sample_idx.tolist())  # a model that raises is not an export failure
    plan = [({}, settings)] + (ladder_settings(settings, ladder) if escalate else [])
    work = out_path.parent / ".attempts"
    shutil.rmtree(work, ignore_errors=True)
    spreads = rt.spreads_of(canonical)
    attempts: list[ExportAttempt] = []
    seen: dict[ExportSettings, int] = {}

    def attempt_at(step: int, overrides: dict, step_settings: ExportSettings) -> ExportAttempt:
        attempt = ExportAttempt(step, overrides, step_settings)
        attempts.append(attempt)
        if step_settings in seen:
            attempt.status, attempt.error = "duplicate", f"same settings as attempt {seen[step_settings]}"
        else:
            seen[step_settings] = step
            _try(attempt, model, sample, inputs, canonical, metadata, judge, spreads, work / f"attempt_{step}" / "model.onnx")
        on_attempt(attempt)
        chosen = _closest(attempts)
        for other in attempts:  # one attempt's outputs in memory at a time, beside the one that may be chosen
            if other is not chosen:
                other.ort_run = None
        return attempt

    why = ""
    for step, (overrides, step_settings) in enumerate(plan):
        attempt = attempt_at(step, overrides, step_settings)
        if attempt.status == "passed":
            why = "the configured export passes every check" if step == 0 else "the first ladder step to pass every check"
            break
    passed = _closest(attempts)
    if passed is not None and passed.status == "passed" and judge.hazards and not passed.settings.dynamo and escalate:
        why = _prefer_dynamo(passed, plan, attempts, attempt_at, judge)
    chosen = _preferred(attempts)
    if chosen is not None:
        _move_model(work / f"attempt_{chosen.step}", out_path)
    shutil.rmtree(work, ignore_errors=True)
    return ExportOutcome(attempts, chosen, sample_idx.tolist(), why if chosen and chosen.status == "passed" else "")


def _prefer_dynamo(passed: ExportAttempt, plan, attempts, attempt_at, judge: Judge) -> str:
    """A TorchScript attempt passed although forward_scan warned: try the ladder's dynamo step."""
    hazard = f"forward_scan warned of {len(judge.hazards)} trace hazard(s) ({judge.hazards[0]})"
    step = next(((i, o, s) for i, (o, s) in enumerate(plan) if s.dynamo and i > passed.step), None)
    if step is None:
        return f"{hazard}, but the ladder has no dynamo step to compare with; keeping attempt {passed.step}"
    dynamo = next((a for a in attempts if a.step == step[0]), None) or attempt_at(*step)
    if dynamo.status == "passed":
        passed.ort_run = None
        return (f"{hazard}; TorchScript attempt {passed.step} passed, and the dynamo attempt {dynamo.step} passes "
                "every check too: preferred, as dynamo does not freeze Python values into the graph")
    return (f"{hazard}; the dynamo attempt {dynamo.step} did not pass ({dynamo.status}: {dynamo.error}), "
            f"so TorchScript attempt {passed.step} is kept")


def _preferred(attempts: list[ExportAttempt]) -> ExportAttempt | None:
    """A passing dynamo attempt tried after a passing TorchScript one (see _prefer_dynamo), else _closest."""
    passing = [a for a in attempts if a.status == "passed"]
    return next((a for a in passing if a.settings.dynamo), None) if len(passing) > 1 else _closest(attempts)


def _closest(attempts: list[ExportAttempt]) -> ExportAttempt | None:
    """The passed attempt, else the exported one closest to passing (its model is written so the
    roundtrip stage records its metrics; the upload gate refuses it)."""
    exported = [a for a in attempts if a.status in ("passed", "roundtrip_failed", "axes_failed")]
    passed = next((a for a in exported if a.status == "passed"), None)
    return passed or (min(exported, key=lambda a: (a.status != "axes_failed", a.worst_out_of_tol)) if exported else None)


def _try(attempt, model, sample, inputs, canonical, metadata, judge: Judge, spreads, path: Path) -> None:
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
        run = rt.run_and_probe(path, inputs, canonical, names, judge.rows_per_run, len(next(iter(sample.values()))),
                               judge.tolerances, spreads=spreads)
    except Exception as exc:  # ORT refuses graphs it cannot load or run: that is this attempt's failure
        attempt.status, attempt.error = "roundtrip_failed", f"onnxruntime: {first_line(exc)}"
        attempt.seconds = time.perf_counter() - started
        return
    attempt.ort_run, attempt.batch_probe, actual = run, run.batch_probe, run.outputs
    attempt.roundtrip = rt.compare(actual, canonical, judge.tolerances, spreads)
    # The roundtrip check itself decides: one rule for acceptance here, in the stage and in verify.
    verdict = roundtrip(attempt.roundtrip, judge.tolerances, attempt.batch_probe, hazards=judge.hazards)
    attempt.status, attempt.error = ("passed", None) if verdict.ok else ("roundtrip_failed", verdict.message)
    if not verdict.ok:
        run.localization = localize_failure(lambda: model, path, inputs, actual, canonical, metadata, judge.localize_tol,
                                            judge.localize_rows)
        attempt.localization = without_trail(run.localization)
    elif judge.probe_axes and judge.axis_plan:
        probes = axis_probe.probe_all(path, metadata, inputs, judge.axis_plan, judge.tolerances, spreads,
                                      eager_reference(model, metadata))
        attempt.axis_probes = run.axis_probes = [p.to_dict() for p in probes]
        run.axis_raw = [{"axis": p.axis, "size": p.size, "declared": p.declared, "status": p.status,
                         "message": p.message, "raw": p.raw} for p in probes]
        # The model's own forward failing at a size is not the exporter's doing: no step fixes it.
        failed = [p for p in probes if not p.ok and p.status != "pytorch_error"]
        if failed:
            attempt.status = "axes_failed"
            attempt.error = f"dynamic axis {failed[0].axis!r}: {failed[0].message}{likely_cause(judge.hazards)}"
    attempt.seconds = time.perf_counter() - started


def _move_model(attempt_dir: Path, out_path: Path) -> None:
    """Move model.onnx (and its external data, if any) into place, replacing what was there."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_path.parent.glob(out_path.name + "*"):
        stale.unlink()
    for produced in attempt_dir.iterdir():
        shutil.move(str(produced), out_path.parent / produced.name.replace("model.onnx", out_path.name, 1))
