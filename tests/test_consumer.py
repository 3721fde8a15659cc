"""atlas-bundle verify and resolve against a real MLflow store (sqlite + local artifacts)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml_atlas_sdk import AtlasArtifactBundle, AtlasBundleError, push_to_mlflow, resolve
from sdk_helpers import demo_frame, demo_metadata, demo_model


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    os.environ.pop("ANTHROPIC_API_KEY", None)  # the structural architecture.md, no network
    """One good bundle pushed through the SDK; tests copy its run's artifacts before damaging them."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                                 val_outputs_df=demo_frame("val_outputs"),
                                 calibration_inputs_df=demo_frame("calibration_inputs"))  # every SPEC file
    cwd = Path.cwd()
    try:
        os.chdir(root)  # the embedded store keeps artifacts in ./mlartifacts
        run_id = push_to_mlflow(bundle, None, tracking_uri=uri)
    finally:
        os.chdir(cwd)
    return uri, run_id


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml_atlas_sdk.cli", *args], capture_output=True, text=True, timeout=300)


def _artifact_dir(uri: str, run_id: str) -> Path:
    return Path(MlflowClient(uri).get_run(run_id).info.artifact_uri.removeprefix("file://")) / "atlas"


def test_verify_passes_on_a_good_bundle(pushed):
    uri, run_id = pushed
    result = _cli("verify", run_id, "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout


@pytest.mark.parametrize("name", ["model.onnx", "metadata.json", "val_inputs.pt", "val_outputs.pt", "calibration_inputs.pt",
                                  "val_outputs_user.pt", "architecture.md", "validation_report.json", "manifest.json"])
def test_one_flipped_byte_fails_naming_the_file(pushed, name):
    uri, run_id = pushed
    target = _artifact_dir(uri, run_id) / name
    original = target.read_bytes()
    try:
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x01
        target.write_bytes(bytes(damaged))
        result = _cli("verify", run_id, "--tracking-uri", uri)
    finally:
        target.write_bytes(original)
    assert result.returncode == 1
    assert any(line.startswith(f"{name}: ") for line in result.stderr.splitlines()), result.stderr


def test_incomplete_run_is_refused(pushed):
    uri, run_id = pushed
    client = MlflowClient(uri)
    client.delete_tag(run_id, "atlas.bundle_complete")
    try:
        result = _cli("verify", run_id, "--tracking-uri", uri)
    finally:
        client.set_tag(run_id, "atlas.bundle_complete", "true")
    assert result.returncode == 1 and "incomplete bundle" in result.stderr


def test_resolve_caches_by_sha_rechecks_and_works_offline(pushed, tmp_path):
    uri, run_id = pushed
    cache = tmp_path / "cache"
    first = resolve(run_id, uri, cache)
    assert first.path.is_relative_to(cache / first.bundle_sha256)
    assert first.metadata.model_name == "demo_ranking"

    offline = resolve(run_id, "http://127.0.0.1:9", cache)  # nothing listens there
    assert offline.path == first.path

    (first.path / "val_inputs.pt").write_bytes(b"corrupted")
    with pytest.raises(AtlasBundleError):
        resolve(run_id, "http://127.0.0.1:9", cache)  # offline and the cache fails its manifest
    repaired = resolve(run_id, uri, cache)  # online again: downloaded afresh
    assert (repaired.path / "val_inputs.pt").read_bytes() != b"corrupted"
    shutil.rmtree(cache)
