"""What a bundle was validated under, read off the verdicts themselves (not the settings), so both
doors record the same thing and a consumer re-checks by the producer's own rules: the round-trip
tolerances per output, the drift tolerances, the dynamic-axis sizes exercised, the skipped checks.
It goes into metadata.json (`validated_under`) and, flattened, into the run's params, so MLflow's
compare view tells apart two runs validated under different tolerances."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ml_atlas_sdk.checks.result import CheckResult, Verdict


def validated_under(results: Iterable[CheckResult]) -> dict[str, Any]:
    record: dict[str, Any] = {"roundtrip_tolerances": {}, "drift_tolerances": None, "axis_sizes": {},
                              "skipped_checks": []}
    skipped = set()
    for result in results:
        details = result.details
        if details.get("reason") == "configured":
            skipped.add(result.name)
        elif result.name == "roundtrip":
            record["roundtrip_tolerances"] = details.get("tolerances", {})
        elif result.name == "drift" and "tolerance_mse" in details:
            record["drift_tolerances"] = {k: details[k] for k in ("tolerance_mse", "tolerance_max_abs")}
        elif result.name == "dynamic_axes" and result.verdict is not Verdict.SKIPPED:
            record["axis_sizes"] = details.get("sizes", {})
    record["skipped_checks"] = sorted(skipped)
    return record


def validated_params(record: dict[str, Any]) -> dict[str, str]:
    """The record as flat MLflow params: roundtrip.<output>.<rtol|atol|max_nrmse>, drift.<tolerance>,
    checks.axis_sizes.<axis> ("8,24"), checks.skip ("none" when nothing was skipped)."""
    params = {f"roundtrip.{output}.{key}": str(value)
              for output, tol in record.get("roundtrip_tolerances", {}).items() for key, value in tol.items()}
    params.update({f"drift.{key}": str(value) for key, value in (record.get("drift_tolerances") or {}).items()})
    params.update({f"checks.axis_sizes.{axis}": ",".join(map(str, sizes))
                   for axis, sizes in record.get("axis_sizes", {}).items()})
    params["checks.skip"] = ",".join(record.get("skipped_checks", [])) or "none"
    return params
