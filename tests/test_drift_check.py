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
    assert set(report.metrics["ctr"]) == {"mse", "max_abs_err", "mean_abs_err", "max_pct_err", "mean_pct_err",
                                          "non_finite_mismatch"}
    assert report.metrics["ctr"]["non_finite_mismatch"] == 0
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
    assert result.verdict.value == "warned"
    assert "'ctr': 1 element(s) NaN in user val_outputs but finite in canonical" in result.message
    assert result.details["outputs"]["ctr"]["non_finite_mismatch"] == 1


def test_shape_mismatch_fails_naming_both_shapes():
    user = {"ctr": torch.rand(49, 1), "embedding": CANONICAL["embedding"]}
    result = _step(user).checks[0]
    assert result.verdict.value == "failed" and "[49, 1]" in result.message and "[50, 1]" in result.message


def _nan_canonical():
    """Canonical outputs of a model fed NaN inputs with `checks.skip: [nan_inf]`: NaN in row 3."""
    canonical = {k: v.clone() for k, v in CANONICAL.items()}
    canonical["embedding"][3] = float("nan")
    return canonical


def test_nan_in_canonical_outputs_fails_with_the_count():
    # mse over NaN is NaN and `NaN > tol` is False: the old check passed this.
    user = {k: v.clone() for k, v in CANONICAL.items()}
    report = drift_step(user, _nan_canonical(), 1e-3, 5e-2, SkipPolicy(["nan_inf"]))
    result = report.checks[0]
    assert result.verdict.value == "failed"
    assert "'embedding': 16 element(s) finite in user val_outputs but NaN in canonical" in result.message
    assert report.metrics["embedding"]["non_finite_mismatch"] == 16
    assert math.isfinite(report.metrics["embedding"]["mse"]) and "'ctr'" not in result.message


def test_nan_on_both_sides_is_not_agreement():
    # A user who computed references from the same NaN inputs gets NaN where canonical has NaN.
    canonical = _nan_canonical()
    user = {k: v.clone() for k, v in canonical.items()}
    result = drift_step(user, canonical, 1e-3, 5e-2, SkipPolicy(["nan_inf"])).checks[0]
    assert result.verdict.value == "failed"
    assert "16 element(s) NaN in both user val_outputs and canonical" in result.message


def test_user_nan_next_to_real_drift_still_fails():
    user = {"ctr": CANONICAL["ctr"].clone(), "embedding": CANONICAL["embedding"] + 0.5}
    user["ctr"][0, 0] = float("inf")
    result = _step(user).checks[0]
    assert result.verdict.value == "failed"
    assert "1 element(s) +Inf in user val_outputs but finite in canonical" in result.message
    assert "'embedding': mse" in result.message


def test_matching_infinities_agree():
    canonical = {"ctr": torch.tensor([[float("-inf")], [1.0]])}
    user = {"ctr": torch.tensor([[float("-inf")], [1.0]])}
    report = drift_step(user, canonical, 1e-3, 5e-2, SkipPolicy([]))
    assert report.checks[0].verdict.value == "passed"
    assert report.metrics["ctr"]["non_finite_mismatch"] == 0 and report.metrics["ctr"]["mse"] == 0.0
