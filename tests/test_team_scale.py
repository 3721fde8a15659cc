"""Team scale, for real: an MLflow server proxying to S3 (moto), direct s3:// artifacts, a DVC S3 remote."""
from __future__ import annotations

import boto3
import pytest
from mlflow.tracking import MlflowClient

from conftest import make_project_copy, project_env, run, set_params
from ml_atlas_sdk import AtlasArtifactBundle, push_to_mlflow
from ml_atlas_sdk.consumer import verify
from sdk_helpers import demo_frame, demo_metadata, demo_model
from servers import S3_ENV, mlflow_server, moto_s3

BUCKET = "atlas-team"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    logs = tmp_path_factory.mktemp("s3-logs")
    with moto_s3(logs) as endpoint:
        boto3.client("s3", endpoint_url=endpoint, **_creds()).create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def server(s3, tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), s3, f"s3://{BUCKET}/proxied") as uri:
        yield uri


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(key, value)
    return {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3}


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_ENV["AWS_DEFAULT_REGION"]}


def _keys(endpoint: str, prefix: str) -> list[str]:
    listed = boto3.client("s3", endpoint_url=endpoint, **_creds()).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_pipeline_uploads_through_a_server_proxying_artifacts_to_s3(server, s3, s3_env, tmp_path):
    project = make_project_copy(tmp_path / "project")
    set_params(project, mlflow={"tracking_uri": server, "experiment": "team"})
    run(["dvc", "repro"], project, env=project_env(s3_env))
    (pushed,) = MlflowClient(server).search_runs([MlflowClient(server).get_experiment_by_name("team").experiment_id])
    assert pushed.data.tags["atlas.bundle_complete"] == "true"
    keys = _keys(s3, "proxied/")
    assert any(k.endswith("atlas/manifest.json") for k in keys) and any(k.endswith("atlas/model.onnx") for k in keys)
    assert verify(pushed.info.run_id, server) == []


def test_sdk_writes_directly_to_an_s3_artifact_location(server, s3, s3_env):
    client = MlflowClient(server)
    client.create_experiment("direct-s3", artifact_location=f"s3://{BUCKET}/direct")
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                                 architecture_doc=None)
    run_id = push_to_mlflow(bundle, None, tracking_uri=server, experiment="direct-s3")
    assert any(k.endswith(f"{run_id}/artifacts/atlas/manifest.json") for k in _keys(s3, "direct/"))
    assert verify(run_id, server) == []


def test_dvc_remote_on_s3_shares_the_stage_cache(s3, s3_env, tmp_path):
    env = project_env(s3_env)
    first = make_project_copy(tmp_path / "first")
    run(["dvc", "remote", "add", "-d", "team", f"s3://{BUCKET}/dvcstore"], first, env=env)
    run(["dvc", "remote", "modify", "team", "endpointurl", s3], first, env=env)
    run(["dvc", "repro", "roundtrip"], first, env=env)
    run(["dvc", "push"], first, env=env)
    run(["git", "add", "-A"], first, env=env)
    run(["git", "commit", "-qm", "build through roundtrip"], first, env=env)
    assert _keys(s3, "dvcstore/")

    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path, env=env)
    run(["dvc", "pull", "--with-deps", "roundtrip"], second, env=env)
    assert (second / "build/onnx/model.onnx").is_file()
    again = run(["dvc", "repro", "roundtrip"], second, env=env)
    assert "Running stage" not in again.stdout
