"""One registry of checks for both front doors (DVC stages and the SDK).

A check is a function returning a `Finding`; `run_check` applies the skip policy and the
registered severity, so skipping, reporting and gating are written once.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ml_atlas_sdk.checks.result import CheckResult, Finding, Verdict
from ml_atlas_sdk.errors import AtlasInputError


@dataclass(frozen=True)
class CheckSpec:
    name: str
    severity: Verdict  # what a finding with ok=False becomes
    stage: str
    summary: str


CHECK_SPECS: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in (
        CheckSpec("df_shape_dtype", Verdict.FAILED, "tensorize", "columns, cell shapes and dtypes match the metadata"),
        CheckSpec("nan_inf", Verdict.FAILED, "tensorize", "no NaN or Inf in inputs or canonical outputs"),
        CheckSpec("calib_sample_count", Verdict.WARNED, "tensorize", "enough calibration rows for INT8"),
        CheckSpec("forward_scan", Verdict.WARNED, "export", "forward() has no trace-breaking Python"),
        CheckSpec("roundtrip", Verdict.FAILED, "roundtrip", "ONNX Runtime matches the canonical outputs"),
        CheckSpec("dynamic_axes", Verdict.FAILED, "roundtrip", "ONNX matches PyTorch at other sizes of every dynamic axis"),
        CheckSpec("sample_invariance", Verdict.WARNED, "invariance", "the graph does not depend on the export sample"),
        CheckSpec("onnx_cross_check", Verdict.FAILED, "export", "ONNX checker, names, dynamic batch axis, opset"),
        CheckSpec("drift", Verdict.FAILED, "drift", "user reference outputs agree with the canonical ones"),
        CheckSpec("fp16_range", Verdict.WARNED, "precision", "activations, parameters and buffers fit FP16"),
        CheckSpec("fp16_roundtrip", Verdict.WARNED, "precision", "the model in half precision matches FP32"),
        CheckSpec("int8_calibration_coverage", Verdict.WARNED, "precision", "the calibration sample covers the validation data"),
    )
}

_FUNCTIONS: dict[str, Callable[..., Finding]] = {}


def check(name: str) -> Callable[[Callable[..., Finding]], Callable[..., Finding]]:
    """Register a check function under one of the SPEC check names."""
    if name not in CHECK_SPECS:
        raise ValueError(f"unknown check name {name!r}")

    def register(fn: Callable[..., Finding]) -> Callable[..., Finding]:
        _FUNCTIONS[name] = fn
        return fn

    return register


class SkipPolicy:
    """`checks.skip` (pipeline) / `skip_sdk_validations` (SDK): [] | true | names."""

    def __init__(self, skip: bool | Iterable[str] | None, setting: str = "checks.skip"):
        if skip is None or skip is False:
            names: set[str] = set()
        elif skip is True:
            names = set(CHECK_SPECS)
        elif isinstance(skip, str):
            raise AtlasInputError(f"{setting}: expected true or a list of check names, got the string {skip!r}")
        else:
            names = {str(n) for n in skip}
        unknown = sorted(names - set(CHECK_SPECS))
        if unknown:
            raise AtlasInputError(
                f"{setting}: unknown check name(s) {unknown}; known: {sorted(CHECK_SPECS)}"
            )
        self.names = frozenset(names)

    def __contains__(self, name: str) -> bool:
        return name in self.names


def run_check(
    name: str,
    *args: Any,
    skip: SkipPolicy,
    subject: str | None = None,
    severity: Verdict | None = None,
    **kwargs: Any,
) -> CheckResult:
    """Run a registered check unless skipped; `severity` overrides the registered one."""
    spec = CHECK_SPECS[name]
    if name in skip:
        return CheckResult(name, Verdict.SKIPPED, "skipped by configuration", {"reason": "configured"}, subject)
    finding = _FUNCTIONS[name](*args, **kwargs)
    return result_from_finding(name, finding, subject=subject, severity=severity or spec.severity)


def result_from_finding(
    name: str, finding: Finding, *, subject: str | None = None, severity: Verdict | None = None
) -> CheckResult:
    if finding.ok is None:
        verdict = Verdict.SKIPPED
    elif finding.ok:
        verdict = Verdict.PASSED
    else:
        verdict = severity or CHECK_SPECS[name].severity
    return CheckResult(name, verdict, finding.message, finding.details, subject)
