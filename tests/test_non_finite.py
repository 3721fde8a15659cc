"""No comparison can be fooled by NaN/Inf: the primitive, and a model NaN only under ONNX export
refused by the ladder, the roundtrip check, the SDK door and `atlas-bundle verify`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from fixture_models import nan_under_export
from ml_atlas_sdk import AtlasArtifactBundle, AtlasBundleError, ModelMetadata, push_to_mlflow
from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.checks.roundtrip import roundtrip as roundtrip_check
from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.compare import Tolerance, compare_arrays, problem, worst
from ml_atlas_sdk.consumer import check_bundle_dir
from ml_atlas_sdk.settings import EscalationSettings, RoundtripSettings
from ml_atlas_sdk.steps.canonical import canonical_outputs
from ml_atlas_sdk.steps.export import export_model
from ml_atlas_sdk.steps.roundtrip import roundtrip_model
from sdk_helpers import step_settings

# The pipeline's defaults, as the SDK door uses them.
defaults = SimpleNamespace(ROWS_PER_RUN=RoundtripSettings().batch_size,
                           ESCALATION_LADDER=[step.overrides() for step in EscalationSettings().ladder])

ROWS = 24
TOL = Tolerance(rtol=1e-2, atol=5e-2)
NAN_MESSAGE = f"logits: {ROWS * nan_under_export.CLASSES} element(s) NaN in ONNX but finite in PyTorch"


# --- the primitive ---------------------------------------------------------------------------

def _one(actual, reference):
    return compare_arrays(np.array(actual, dtype=np.float32), np.array(reference, dtype=np.float32), TOL)


@pytest.mark.parametrize("actual, reference, pair", [
    ([np.nan, 1.0], [1.0, 1.0], "nan_vs_finite"),
    ([1.0, 1.0], [np.nan, 1.0], "finite_vs_nan"),
    ([np.inf, 1.0], [1.0, 1.0], "posinf_vs_finite"),
    ([1.0, 1.0], [-np.inf, 1.0], "finite_vs_neginf"),
    ([np.inf, 1.0], [-np.inf, 1.0], "posinf_vs_neginf"),
    ([np.nan, 1.0], [np.inf, 1.0], "nan_vs_posinf"),
    ([np.nan, 1.0], [np.nan, 1.0], "nan_vs_nan"),  # NaN carries no value: never agreement
])
def test_a_non_finite_element_the_other_side_does_not_match_is_out_of_tolerance(actual, reference, pair):
    m = _one(actual, reference)
    assert m["non_finite_mismatch"] == 1 and m["non_finite_pairs"] == {pair: 1}
    assert m["out_of_tol"] == 1 and m["frac_out_of_tol"] == 0.5
    # The finite element agrees exactly, and the statistics are over finite pairs only: no NaN.
    assert m["max_abs_err"] == 0.0 and m["mean_abs_err"] == 0.0 and m["max_rel_err"] == 0.0


def test_the_same_infinity_on_both_sides_agrees():
    m = _one([np.inf, -np.inf, 2.0], [np.inf, -np.inf, 2.01])
    assert m["non_finite_mismatch"] == 0 and m["out_of_tol"] == 0 and "non_finite_pairs" not in m
    assert problem("y", m, "ONNX", "PyTorch") is None


def test_the_message_names_the_count_and_both_sides():
    m = _one([np.nan] * 5 + [np.inf, 9.0], [0.0] * 7)
    line = problem("logits", m, "ONNX", "PyTorch")
    assert line == ("logits: 5 element(s) NaN in ONNX but finite in PyTorch; "
                    "1 element(s) +Inf in ONNX but finite in PyTorch; "
                    "1 element(s) (14.29%) out of tolerance (max_abs_err 9)")


def test_shapes_are_checked_before_values():
    m = compare_arrays(np.zeros((4, 3)), np.zeros((4, 2)), TOL)
    assert m["shape_mismatch"] and m["frac_out_of_tol"] == 1.0
    assert problem("logits", m, "ONNX", "PyTorch") == "logits: ONNX shape [4, 3] vs PyTorch shape [4, 2]"
    # Same element count, different layout: still a mismatch, never a broadcast or a reshape.
    assert compare_arrays(np.zeros((6, 2)), np.zeros((4, 3)), TOL).get("shape_mismatch")


def test_worst_keeps_nan_whatever_the_order():
    assert max([1.0, float("nan")]) == 1.0  # what the old console line did
    assert np.isnan(worst([1.0, float("nan")])) and np.isnan(worst([float("nan"), 1.0]))


def test_roundtrip_check_and_batch_probe_refuse_nan():
    per_output = rt.compare({"logits": np.full((4, 3), np.nan, np.float32)}, {"logits": torch.zeros(4, 3)}, TOL)
    finding = roundtrip_check(per_output, TOL, {"1": "ok"})
    assert finding.ok is False and finding.message == "logits: 12 element(s) NaN in ONNX but finite in PyTorch"


# --- the NaN-only-under-export model ----------------------------------------------------------

def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {"x": torch.randn(ROWS, nan_under_export.FEATURES, generator=gen)}


def _bundle(**kw) -> AtlasArtifactBundle:
    frame = pd.DataFrame({"x": list(_inputs()["x"].numpy())})
    return AtlasArtifactBundle(model=nan_under_export.build_model(), metadata=ModelMetadata(**nan_under_export.metadata()),
                               val_inputs_df=frame, export_batch_size=8, architecture_doc=None, **kw)


def test_export_ladder_and_roundtrip_refuse_the_model(tmp_path):
    meta = ModelMetadata(**nan_under_export.metadata())
    model, inputs, skip = nan_under_export.build_model(), _inputs(), SkipPolicy([])
    canonical, report = canonical_outputs(model, inputs, meta, skip, defaults.ROWS_PER_RUN)
    assert report.checks[0].verdict.value == "passed"  # PyTorch itself is finite
    settings = step_settings(meta, export={"batch_size": 8})  # the default ladder
    onnx_path = tmp_path / "model.onnx"
    outcome, _ = export_model(model, inputs, canonical, settings, onnx_path)
    tried = [a for a in outcome.attempts if a.status != "duplicate"]
    assert len(tried) == 1 + len(defaults.ESCALATION_LADDER)  # dynamo too: no step escapes the NaN
    assert all(a.status == "roundtrip_failed" and NAN_MESSAGE in a.error for a in tried), [a.error for a in tried]
    assert all("batch size 1: logits: 3 element(s) NaN in ONNX" in a.error for a in tried)
    # Every attempt, TorchScript and dynamo alike, is traced to where NaN first appears: the model's own forward.
    assert all(a.localization["first_divergence"]["module"] == "" for a in tried), [a.localization for a in tried]
    assert all(a.localization["first_divergence"]["module_type"] == "NanUnderExport" for a in tried)
    assert not outcome.accepted and onnx_path.is_file()  # the closest one is kept for the roundtrip stage
    rt_report, _ = roundtrip_model(onnx_path, inputs, canonical, settings, 8)
    result = rt_report.checks[0]
    assert result.verdict.value == "failed" and result.message.startswith(NAN_MESSAGE)
    assert rt_report.metrics["outputs"]["logits"]["non_finite_mismatch"] == ROWS * nan_under_export.CLASSES


def test_nan_inputs_with_nan_inf_skipped_fail_the_roundtrip(tmp_path):
    # NaN in, NaN out on both sides: `abs_err > tol` was False, so this passed with nan_inf skipped.
    meta = ModelMetadata(**nan_under_export.metadata())
    model, skip = torch.nn.Linear(nan_under_export.FEATURES, nan_under_export.CLASSES), SkipPolicy(["nan_inf"])
    inputs = _inputs()
    inputs["x"][5, 0] = float("nan")
    canonical, _ = canonical_outputs(model, inputs, meta, skip, defaults.ROWS_PER_RUN)
    settings = step_settings(meta, export={"batch_size": 8}, escalation={"enabled": False}, checks={"skip": ["nan_inf"]})
    onnx_path = tmp_path / "model.onnx"
    export_model(model, inputs, canonical, settings, onnx_path)
    result = roundtrip_model(onnx_path, inputs, canonical, settings, 8)[0].checks[0]
    assert result.verdict.value == "failed"
    assert result.message.startswith("logits: 3 element(s) NaN in both ONNX and PyTorch")


def test_sdk_door_refuses_to_push_naming_roundtrip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(AtlasBundleError) as refused:
        push_to_mlflow(_bundle(), None, tracking_uri=uri, experiment="nan")
    assert "roundtrip: " + NAN_MESSAGE in str(refused.value)
    assert "first divergence in the model itself (NanUnderExport, " in str(refused.value)
    assert MlflowClient(uri).get_experiment_by_name("nan") is None  # no run, not even an empty one
    assert not (tmp_path / "mlartifacts").exists()


@pytest.fixture(scope="module")
def nan_bundle_run(tmp_path_factory):
    """The NaN model pushed with roundtrip skipped: the bundle a consumer must still refuse."""
    root = tmp_path_factory.mktemp("nan_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cwd = Path.cwd()
    try:
        os.chdir(root)  # the embedded store keeps artifacts in ./mlartifacts
        run_id = push_to_mlflow(_bundle(skip_sdk_validations=["roundtrip"]), None, tracking_uri=uri)
    finally:
        os.chdir(cwd)
    return uri, run_id


def test_check_bundle_dir_reports_the_nan_mismatch(nan_bundle_run):
    uri, run_id = nan_bundle_run
    bundle_dir = Path(MlflowClient(uri).get_run(run_id).info.artifact_uri.removeprefix("file://")) / "atlas"
    assert check_bundle_dir(bundle_dir) == [
        f"model.onnx: output logits: {ROWS * nan_under_export.CLASSES} element(s) NaN in ONNX but finite in val_outputs.pt"
    ]


def test_verify_refuses_the_pushed_nan_bundle(nan_bundle_run):
    uri, run_id = nan_bundle_run
    result = subprocess.run([sys.executable, "-m", "ml_atlas_sdk.cli", "verify", run_id, "--tracking-uri", uri],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "bundle verified" not in result.stdout
    assert "element(s) NaN in ONNX but finite in val_outputs.pt" in result.stderr


def test_chunked_comparison_gives_the_metrics_of_one_pass(monkeypatch):
    """compare_arrays widens and compares a chunk at a time; metrics must not depend on where the
    chunks fall (NaN, inf and out-of-tolerance elements planted in different chunks)."""
    from ml_atlas_sdk import compare

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 7)).astype(np.float32)
    actual = reference + rng.normal(scale=0.01, size=reference.shape).astype(np.float32)
    actual[3, 1], actual[150, 2], reference[299, 6] = np.nan, np.inf, -np.inf
    actual[200, 0] += 5.0
    tol = Tolerance(rtol=0.01, atol=0.05)
    whole = compare_arrays(actual, reference, tol)
    monkeypatch.setattr(compare, "CHUNK_ELEMENTS", 64)  # 33 chunks
    chunked = compare_arrays(torch.from_numpy(actual), reference, tol)
    assert chunked.pop("non_finite_pairs") == whole.pop("non_finite_pairs") == {
        "nan_vs_finite": 1, "posinf_vs_finite": 1, "finite_vs_neginf": 1}
    assert chunked == pytest.approx(whole, rel=1e-12)  # the mean sums in another order
    assert whole["non_finite_mismatch"] == 3 and whole["out_of_tol"] >= 4, whole


def test_error_curve_is_the_quantiles_of_the_finite_errors(monkeypatch):
    from ml_atlas_sdk import run_record

    rng = np.random.default_rng(1)
    reference = rng.normal(size=(500, 3)).astype(np.float32)
    actual = reference + rng.normal(scale=0.1, size=reference.shape).astype(np.float32)
    actual[7, 2], actual[400, 0] = np.nan, np.inf  # left out of the curve, not poisoning it
    monkeypatch.setattr(run_record, "CHUNK_ELEMENTS", 100)
    errors = np.abs(actual.astype(np.float64) - reference.astype(np.float64)).ravel()
    expected = np.quantile(errors[np.isfinite(errors)], run_record.QUANTILES)
    curve = run_record.error_curve(actual, reference)
    assert [e for _, e in curve] == pytest.approx(expected.tolist(), rel=1e-12) and all(np.isfinite(expected))
    assert run_record.error_curve(actual, reference[:10]) == []  # shapes differ: nothing to draw
