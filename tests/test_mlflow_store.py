"""Pushing to a real MLflow store in-process: partial uploads never look complete."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from ml_atlas_sdk.bundle import MANIFEST, build_manifest
from ml_atlas_sdk.mlflow_store import push_bundle, redact_uri


@pytest.fixture
def bundle(tmp_path):
    bundle_dir = tmp_path / "atlas"
    bundle_dir.mkdir()
    for i in range(6):
        (bundle_dir / f"file_{i}.bin").write_bytes(bytes([i]) * (100 + i))
    manifest = build_manifest(bundle_dir)
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest.to_dict()))
    return bundle_dir, manifest


def _push(bundle_dir, manifest, uri, **kw):
    return push_bundle(bundle_dir, manifest, {"model_name": "m"}, {"atlas.bundle_sha256": manifest.bundle_sha256},
                       tracking_uri=uri, experiment="exp", **kw)


def test_failure_half_way_marks_run_failed_and_a_rerun_succeeds(bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundle_dir, manifest = bundle
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    uploaded = []

    def fail_half_way(name, done, total):
        uploaded.append(name)
        if done == total // 2:
            raise OSError("disk vanished")

    with pytest.raises(OSError):
        _push(bundle_dir, manifest, uri, on_file=fail_half_way)
    client = MlflowClient(tracking_uri=uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert failed.info.status == "FAILED"
    assert "atlas.bundle_complete" not in failed.data.tags
    assert len(uploaded) == 7 // 2

    ok = _push(bundle_dir, manifest, uri)
    assert not ok.reused and ok.run_id != failed.info.run_id
    finished = client.get_run(ok.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["atlas.bundle_complete"] == "true"
    listed = {a.path for a in client.list_artifacts(ok.run_id, "atlas")}
    assert listed == {f"atlas/file_{i}.bin" for i in range(6)} | {"atlas/manifest.json"}

    again = _push(bundle_dir, manifest, uri)
    assert again.reused and again.run_id == ok.run_id


def test_changed_files_after_manifest_are_refused(bundle, tmp_path):
    bundle_dir, manifest = bundle
    (bundle_dir / "file_0.bin").write_bytes(b"tampered")
    with pytest.raises(Exception, match="changed since the manifest"):
        _push(bundle_dir, manifest, f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.parametrize("uri, expected", [
    ("http://alice:pw@mlflow.internal:5000/path?token=abc", "http://mlflow.internal:5000/path"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("databricks", "databricks"),
])
def test_redact_uri_drops_credentials(uri, expected):
    assert redact_uri(uri) == expected
