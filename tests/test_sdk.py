"""The SDK door: the seed's minimal and full usage on the demo model, pushed to a real MLflow store."""
from __future__ import annotations


import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from ml_atlas_sdk import AtlasArtifactBundle, AtlasBundleError, AtlasInputError, ModelMetadata, push_to_mlflow, resolve
from ml_atlas_sdk.consumer import verify
from sdk_helpers import demo_frame, demo_metadata, demo_model


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_minimal_usage_pushes_a_verified_bundle(tracking_uri):
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"))
    run_id = push_to_mlflow(bundle, None)
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.tags["atlas.bundle_complete"] == "true"
    assert run.data.tags["atlas.check.drift"] == "skipped"  # no user outputs: skipped with a reason
    assert verify(run_id, tracking_uri) == []


def test_full_usage_inside_an_active_run(tracking_uri, tmp_path):
    bundle = AtlasArtifactBundle(
        model=demo_model(),
        metadata=demo_metadata(),
        val_inputs_df=demo_frame("val_inputs"),
        val_outputs_df=demo_frame("val_outputs"),
        calibration_inputs_df=demo_frame("calibration_inputs"),
        export_batch_size=32,
        architecture_doc=None,
        skip_sdk_validations={"sample_invariance"},
        drift_tolerance_mse=1e-4,
        drift_tolerance_max_abs=1e-2,
        bundle_schema_version="1",
    )
    mlflow.set_experiment("notebook")
    with mlflow.start_run() as run:
        run_id = push_to_mlflow(bundle, run, register_model="atlas-demo-ranker")
    assert run_id == run.info.run_id
    client = MlflowClient(tracking_uri)
    finished = client.get_run(run_id)
    assert finished.data.tags["atlas.skipped_checks"] == "sample_invariance"
    # The demo is FP16- and INT8-ready: its calibration sample comes from the validation distribution.
    assert {n: finished.data.tags[f"atlas.check.{n}"] for n in ("fp16_range", "fp16_roundtrip", "int8_calibration_coverage")} \
        == dict.fromkeys(("fp16_range", "fp16_roundtrip", "int8_calibration_coverage"), "passed")
    assert finished.data.params["export.batch_size"] == "32"
    (version,) = client.search_model_versions("name='atlas-demo-ranker'")
    assert version.run_id == run_id
    # MLflow 3 lists the ONNX model as the run's logged model (the version registered is that model),
    # and the run's "Source" comes from MLflow's own source tags.
    (logged,) = [m for m in client.search_logged_models([finished.info.experiment_id]) if m.source_run_id == run_id]
    assert logged.name == "model" and str(logged.status) == "READY" and version.source == f"models:/{logged.model_id}"
    assert [o.model_id for o in finished.outputs.model_outputs] == [logged.model_id]
    assert finished.data.tags["mlflow.source.name"]  # the commit tag too, inside git (test_run_reuse)
    files = {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "atlas")}
    assert {"calibration_inputs.pt", "val_outputs_user.pt"} <= files and "architecture.md" not in files
    assert not any(f.endswith(".png") for f in files)  # atlas/ is exactly the SPEC bundle

    # Beside the bundle: metrics for the compare view, the error pictures, the verdict table.
    metrics = finished.data.metrics
    for output in demo_metadata().output_names:
        assert 0 <= metrics[f"roundtrip.{output}.max_abs_err"] < 1e-4
        assert 0 <= metrics[f"roundtrip.{output}.tol_usage"] < 1
        assert metrics[f"drift.{output}.mse"] >= 0
    assert metrics["export.accepted_step"] == 0 and metrics["export.attempts"] == 1
    assert {f"seconds.{s}" for s in ("tensorize", "export", "roundtrip", "drift", "precision")} <= set(metrics)
    assert 0 < metrics["precision.max_abs_activation"] < 65504 and metrics["precision.modules_over"] == 0
    assert {"precision.tokens.unseen_share", "precision.dense.outside_share"} <= set(metrics)
    pictures = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert pictures == {"plots/roundtrip_error_quantiles.png", "plots/drift_error_quantiles.png"}
    note = finished.data.tags["mlflow.note.content"]
    assert "| roundtrip | passed |" in note and "| sample_invariance | skipped |" in note

    predicted = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(
        {n: t.numpy() for n, t in torch.load(resolve(run_id, tracking_uri, tmp_path / "cache").path / "val_inputs.pt",
                                             weights_only=True).items()})
    expected = torch.load(resolve(run_id, tracking_uri, tmp_path / "cache").path / "val_outputs.pt", weights_only=True)
    for name, tensor in expected.items():
        np.testing.assert_allclose(predicted[name], tensor.numpy(), rtol=1e-4, atol=1e-5)


def test_failed_checks_raise_and_upload_nothing(tracking_uri):
    outputs = demo_frame("val_outputs")
    far = pd.DataFrame({c: [np.asarray(v) + 1.0 for v in outputs[c]] for c in outputs.columns})
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                                 val_outputs_df=far, architecture_doc=None)
    with pytest.raises(AtlasBundleError, match="drift"):
        push_to_mlflow(bundle, None)
    exp = MlflowClient(tracking_uri).get_experiment_by_name("atlas-bundles")
    assert exp is None or MlflowClient(tracking_uri).search_runs([exp.experiment_id]) == []


def test_bad_bundle_fields_give_readable_errors():
    with pytest.raises(AtlasInputError, match="skip_sdk_validations.*unknown check"):
        AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                            skip_sdk_validations={"no_such_check"})
    with pytest.raises(AtlasInputError, match="export_batch_size"):
        AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                            export_batch_size=1)
    with pytest.raises(AtlasInputError, match="onnx_opset"):
        ModelMetadata.from_config({**demo_metadata().model_dump(), "onnx_opset": 16})
