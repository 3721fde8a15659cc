"""The drift step: user reference outputs vs canonical, per output."""
from __future__ import annotations

import torch

from ml_atlas_sdk.checks import SkipPolicy, Verdict, run_check
from ml_atlas_sdk.checks.drift import non_finite_counts
from ml_atlas_sdk.reports import StageReport


def drift_step(
    user_outputs: dict[str, torch.Tensor] | None,
    canonical: dict[str, torch.Tensor],
    tolerance_mse: float,
    tolerance_max_abs: float,
    skip: SkipPolicy,
) -> StageReport:
    report = StageReport("drift")
    # NaN/Inf in the user's reference outputs makes drift unmeasurable, not the model wrong: warn.
    unmeasurable = user_outputs is not None and any(non_finite_counts(user_outputs).values())
    result = report.add(run_check("drift", user_outputs, canonical, tolerance_mse, tolerance_max_abs, skip=skip,
                                  severity=Verdict.WARNED if unmeasurable else None))
    report.metrics = result.details.get("outputs", {})
    return report
