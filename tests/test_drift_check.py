"""drift: user reference outputs against canonical ones."""
from __future__ import annotations

import math

import torch

from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.checks.drift import drift_metrics
from ml_atlas_sdk.steps.drift import drift_step

CANONICAL = {"ctr": torch.rand(50, 1), "embedding": torch.randn(50, 16)}


def _step(user, **kw):
    return drift_step(user, CANONICAL, 1e-3, 5e-2, SkipPolicy(kw.get("skip", [])))


def test_within_tolerance_passes_with_every_metric():
    user = {k: v + 1e-4 for k, v in CANONICAL.items()}
    report = _step(user)
    assert report.checks[0].verdict.value == "passed"
    assert set(report.metrics["ctr"]) == {"mse", "max_abs_err", "mean_abs_err", "max_pct_err", "mean_pct_err"}
    assert "cosine_sim" in report.metrics["embedding"] and report.metrics["embedding"]["cosine_sim"] > 0.999


def test_far_outputs_fail_naming_the_output():
    user = {"ctr": CANONICAL["ctr"].clone(), "embedding": CANONICAL["embedding"] + 0.5}
    result = _step(user).checks[0]
    assert result.verdict.value == "failed"
    assert "'embedding'" in result.message and "'ctr'" not in result.message


def test_metrics_are_right_on_a_known_case():
    metrics = drift_metrics(torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, 2.0]]))
    assert metrics["mse"] == 0.5 and metrics["max_abs_err"] == 1.0 and metrics["mean_abs_err"] == 0.5
    assert math.isclose(metrics["max_pct_err"], 50.0) and "cosine_sim" not in metrics


def test_no_user_outputs_is_skipped_with_the_reason():
    result = _step(None).checks[0]
    assert result.verdict.value == "skipped" and "data.val_outputs" in result.message


def test_nan_in_user_outputs_warns():
    user = {k: v.clone() for k, v in CANONICAL.items()}
    user["ctr"][3, 0] = float("nan")
    result = _step(user).checks[0]
    assert result.verdict.value == "warned" and "'ctr' has 1 NaN/Inf" in result.message


def test_shape_mismatch_fails_naming_both_shapes():
    user = {"ctr": torch.rand(49, 1), "embedding": CANONICAL["embedding"]}
    result = _step(user).checks[0]
    assert result.verdict.value == "failed" and "[49, 1]" in result.message and "[50, 1]" in result.message
