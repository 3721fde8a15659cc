"""GCS as a team's artifact store (the `gcs` extra): push, verify and resolve through MLflow's gs://
artifact repository and the real google-cloud-storage client, against gcp-storage-emulator on 127.0.0.1."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from ml_atlas_sdk import AtlasArtifactBundle, push_to_mlflow, resolve
from ml_atlas_sdk.consumer import verify
from sdk_helpers import demo_frame, demo_metadata, demo_model
from servers import VENV_BIN, free_port, serving

BUCKET = "atlas-gcs"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The emulator, with STORAGE_EMULATOR_HOST set for this process (and the servers it starts):
    the google-cloud-storage client then talks to it, anonymously."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "gcp-storage-emulator"), "start", "-H", "127.0.0.1", "--port", str(port), "--in-memory",
           "--default-bucket", BUCKET, "-q"]
    with pytest.MonkeyPatch.context() as mp, serving(cmd, f"{endpoint}/", {}, tmp_path_factory.mktemp("gcs") / "emulator.log"):
        mp.setenv("STORAGE_EMULATOR_HOST", endpoint)
        mp.setenv("GOOGLE_CLOUD_PROJECT", "atlas-tests")
        yield endpoint


def _objects(prefix: str) -> list[str]:
    from google.cloud import storage

    return [blob.name for blob in storage.Client().list_blobs(BUCKET, prefix=prefix)]


def _bundle() -> AtlasArtifactBundle:
    return AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                               architecture_doc=None)


def test_push_verify_and_resolve_with_artifacts_on_gcs(gcs, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("gcs", artifact_location=f"gs://{BUCKET}/direct")
    run_id = push_to_mlflow(_bundle(), None, tracking_uri=uri, experiment="gcs")
    stored = _objects("direct/")
    assert any(name.endswith(f"{run_id}/artifacts/atlas/manifest.json") for name in stored)
    assert any("/models/" in name and name.endswith("/artifacts/model.onnx") for name in stored)  # its logged model
    assert verify(run_id, uri) == []
    local = resolve(run_id, uri, cache_dir=tmp_path / "cache")
    assert (local.path / "model.onnx").is_file() and local.path.parent.name == local.bundle_sha256
    # A second push of the same content finds the complete run on GCS and reuses it.
    assert push_to_mlflow(_bundle(), None, tracking_uri=uri, experiment="gcs") == run_id


def test_a_server_serving_artifacts_from_gcs(gcs, tmp_path):
    """The team setup: `mlflow server --artifacts-destination gs://...`; clients need no GCS access."""
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--serve-artifacts", "--artifacts-destination", f"gs://{BUCKET}/proxied"]
    with serving(cmd, f"{server}/health", {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, tmp_path / "server.log"):
        run_id = push_to_mlflow(_bundle(), None, tracking_uri=server, experiment="gcs-team")
        assert any(name.endswith("atlas/manifest.json") for name in _objects("proxied/"))
        assert verify(run_id, server) == []
        assert (resolve(run_id, server, cache_dir=tmp_path / "cache").path / "val_inputs.pt").is_file()
