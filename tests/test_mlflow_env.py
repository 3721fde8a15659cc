"""MLflow's environment: untouched by importing the SDK, our retry defaults in force only while we
talk to MLflow, and a user's explicit value always wins."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ml_atlas_sdk.bundle import MANIFEST, build_manifest, write_json
from ml_atlas_sdk.consumer import verify
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.mlflow_store import HTTP_DEFAULTS, mlflow_env, push_bundle

KEYS = [*HTTP_DEFAULTS, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]


@pytest.fixture(autouse=True)
def no_user_values(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def test_importing_the_sdk_leaves_the_environment_unchanged():
    code = ("import os, json; before = dict(os.environ); "
            "import ml_atlas_sdk.consumer, ml_atlas_sdk.mlflow_store, ml_atlas_sdk.sdk, ml_atlas_sdk.cli; "
            "after = dict(os.environ); "
            "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after) if before.get(k) != after.get(k)}))")
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


def test_mlflow_env_sets_defaults_for_the_block_only_and_keeps_a_users_value(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    with mlflow_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
        with mlflow_env():  # nested: the inner block must not remove the outer one's values
            pass
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
    assert not [k for k in KEYS if k in os.environ and k != "MLFLOW_HTTP_REQUEST_TIMEOUT"]


def test_mlflow_env_restores_after_an_error():
    with pytest.raises(RuntimeError), mlflow_env():
        raise RuntimeError("boom")
    assert not [k for k in KEYS if k in os.environ]


@pytest.fixture
def tiny_bundle(tmp_path):
    bundle = tmp_path / "atlas"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"not really a model; push_bundle only uploads files")
    manifest = build_manifest(bundle)
    write_json(bundle / MANIFEST, manifest.to_dict())
    return bundle, manifest


def test_retry_defaults_are_in_force_during_a_push_and_gone_after(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "3")  # the user's own choice
    seen = {}
    bundle, manifest = tiny_bundle
    monkeypatch.chdir(tmp_path)  # the embedded store keeps artifacts in ./mlartifacts
    push_bundle(bundle, manifest, {}, {}, f"sqlite:///{tmp_path / 'mlflow.db'}", "env",
                before_complete=lambda client, run_id: seen.update({k: os.environ.get(k) for k in HTTP_DEFAULTS}),
                say=lambda message: None)
    assert seen == {**HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "3"}
    assert [k for k in HTTP_DEFAULTS if k in os.environ] == ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connections are refused


def test_a_push_to_a_dead_server_ends_in_bounded_time(tiny_bundle):
    # MLflow's own defaults (7 retries, backoff factor 2) wait minutes here; ours a few seconds.
    bundle, manifest = tiny_bundle
    started = time.monotonic()
    with pytest.raises(AtlasBundleError, match=r"^mlflow.tracking_uri http://127\.0\.0\.1:\d+: .* failed after 3 attempt"):
        push_bundle(bundle, manifest, {}, {}, f"http://127.0.0.1:{_dead_port()}", "env", say=lambda message: None)
    assert time.monotonic() - started < 60


def test_verify_against_a_dead_server_is_one_line_in_bounded_time():
    uri = f"http://127.0.0.1:{_dead_port()}"
    started = time.monotonic()
    problems = verify("0" * 32, uri)
    assert len(problems) == 1 and problems[0].startswith(f"run {'0' * 32}: cannot be read from {uri}"), problems
    assert time.monotonic() - started < 30
    assert not [k for k in KEYS if k in os.environ]
