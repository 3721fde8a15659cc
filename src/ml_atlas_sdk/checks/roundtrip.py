"""The roundtrip verdict: ONNX Runtime's outputs against a reference, plus the batch-size probe."""
from __future__ import annotations

from typing import Any

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding
from ml_atlas_sdk.compare import Tolerance, worst
from ml_atlas_sdk.ort_engine import ONNX, PYTORCH, problems


@check("roundtrip")
def roundtrip(
    per_output: dict[str, dict[str, Any]],
    tol: Tolerance,
    batch_probe: dict[str, str] | None = None,
    reference: str = PYTORCH,
    localization: dict[str, Any] | None = None,
) -> Finding:
    """Every output element within atol + rtol*|ref| (NaN/Inf must match); the batch axis works at other sizes.

    `reference` names the other side in messages: the consumer compares with val_outputs.pt.
    details["problems"] holds one line per failure, for callers that print them one by one.
    `localization` (ml_atlas_sdk.localize) says where inside the network a failure starts.
    """
    bad = problems(per_output, ONNX, reference)
    bad += [f"batch size {size}: {error}" for size, error in (batch_probe or {}).items() if error != "ok"]
    details = {"rtol": tol.rtol, "atol": tol.atol, "outputs": per_output, "batch_probe": batch_probe or {}, "problems": bad}
    if localization is not None:
        details["localization"] = localization
    if bad:
        # Where it starts, or why nobody could tell: the line a user reads first should say.
        said = f" | {localization['message']}" if localization and localization["status"] != "not_run" else ""
        return Finding(False, "; ".join(bad) + said, details)
    largest = worst([m["max_abs_err"] for m in per_output.values()])
    return Finding(True, f"{len(per_output)} output(s) within rtol={tol.rtol}, atol={tol.atol} (max_abs_err {largest:.3g})", details)
