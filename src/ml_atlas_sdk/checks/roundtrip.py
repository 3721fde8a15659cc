"""The roundtrip verdict: ONNX Runtime's outputs against a reference, plus the batch-size probe."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ml_atlas_sdk.checks.dynamic_axes import likely_cause
from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding
from ml_atlas_sdk.compare import tolerance_of, worst
from ml_atlas_sdk.ort_engine import ONNX, PYTORCH, Tolerances, problems


@check("roundtrip")
def roundtrip(
    per_output: dict[str, dict[str, Any]],
    tol: Tolerances,
    batch_probe: dict[str, str] | None = None,
    reference: str = PYTORCH,
    localization: dict[str, Any] | None = None,
    hazards: Sequence[str] = (),
) -> Finding:
    """Every output element within atol + rtol*|ref| (NaN/Inf must match) and, where max_nrmse is
    set, an RMS error small against the outputs' spread; the batch axis works at other sizes.

    `tol`: one Tolerance or one per output. `reference` names the other side in messages: the
    consumer compares with val_outputs.pt. details["problems"] holds one line per failure, for
    callers that print them one by one. `localization` (ml_atlas_sdk.localize) says where inside the
    network a failure starts; `hazards` (forward_scan's warnings) are named as the likely cause.
    """
    bad = problems(per_output, ONNX, reference)
    bad += [f"batch size {size}: {error}" for size, error in (batch_probe or {}).items() if error != "ok"]
    tolerances = {name: tolerance_of(tol, name).to_dict() for name in per_output}
    details = {"tolerances": tolerances, "outputs": per_output, "batch_probe": batch_probe or {}, "problems": bad}
    if localization is not None:
        details["localization"] = localization
    if bad:
        # Where it starts, or why nobody could tell: the line a user reads first should say.
        said = f" | {localization['message']}" if localization and localization["status"] != "not_run" else ""
        return Finding(False, "; ".join(bad) + said + likely_cause(hazards), details)
    largest = worst([m["max_abs_err"] for m in per_output.values()])
    rules = {tuple(t.values()) for t in tolerances.values()}
    shown = (", ".join(f"{k}={v}" for k, v in next(iter(tolerances.values())).items()) if len(rules) == 1
             else "their own tolerances")
    return Finding(True, f"{len(per_output)} output(s) within {shown} (max_abs_err {largest:.3g})", details)
