"""Issue 25: reuse checks a complete run's content (sha256), never a run in MLflow's trash; a killed
upload of any bundle is marked FAILED; an upload that waits for another says which run it waits for.
Real sqlite stores and real processes, through push_bundle."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import project_env
from ml_atlas_sdk import run_claims
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.reuse_key import content_sha256
from test_upload_trust import WORKER, all_runs, make_bundle, push, store  # noqa: F401 (store is a fixture)


def _stored_file(uri: str, run_id: str, name: str) -> Path:
    return Path(MlflowClient(tracking_uri=uri).get_run(run_id).info.artifact_uri.removeprefix("file://")) / "atlas" / name


def test_a_complete_run_corrupted_at_the_same_size_is_not_reused(tmp_path, store):
    bundle = make_bundle(tmp_path, 1)
    first = push(bundle, store).run_id
    stored = _stored_file(store, first, "file_2.bin")
    data = bytearray(stored.read_bytes())
    data[5] ^= 0xFF  # same size, other content
    stored.write_bytes(bytes(data))
    said = []
    again = push(bundle, store, say=said.append)
    assert not again.reused and again.run_id != first
    assert said == [f"not reusing run {first}: its stored file_2.bin differ(s) from the manifest's sha256; pushing a new run"]
    assert push(bundle, store).run_id == again.run_id  # the good run is reused


def test_a_deleted_run_is_not_reused(tmp_path, store):
    bundle = make_bundle(tmp_path, 1)
    first = push(bundle, store).run_id
    MlflowClient(tracking_uri=store).delete_run(first)  # in MLflow's trash, not yet purged
    again = push(bundle, store)
    assert not again.reused and again.run_id != first


def test_a_killed_upload_of_another_bundle_is_marked_failed(tmp_path, store):
    killed, other = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    spec = [{"bundle": str(killed[0]), "uri": store, "go": str(tmp_path / "go")}]
    (tmp_path / "go").touch()
    proc = subprocess.Popen([sys.executable, "-c", WORKER, "60", json.dumps(spec)], cwd=tmp_path,
                            env=project_env(), stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("uploaded 2/"):
            break
    os.kill(proc.pid, signal.SIGKILL)  # kill -9 mid-upload; nobody pushes that bundle again
    proc.wait()
    (orphan,) = all_runs(store)
    assert orphan.info.status == "RUNNING"

    said = []
    pushed = push(other, store, say=said.append)
    assert said == [f"marked orphaned run {orphan.info.run_id} of bundle {killed[1].bundle_sha256[:12]} FAILED: "
                    f"its upload (pid {proc.pid} on {os.uname().nodename}) is gone"]
    client = MlflowClient(tracking_uri=store)
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert client.get_run(pushed.run_id).data.tags["atlas.bundle_complete"] == "true"


def test_an_upload_waiting_for_another_says_which_run(tmp_path, store, monkeypatch):
    bundle = make_bundle(tmp_path, 1)
    push(make_bundle(tmp_path, 2), store)  # the experiment exists
    client = MlflowClient(tracking_uri=store)
    experiment_id = client.get_experiment_by_name("exp").experiment_id
    # A live upload of the same bundle: claimed by this very process, which is alive.
    content = content_sha256(bundle[0], bundle[1], {"model_name": "m"})  # what push() claims the bundle under
    rival = client.create_run(experiment_id, tags=run_claims.claim_tags(bundle[1].bundle_sha256, content)).info.run_id
    monkeypatch.setattr(run_claims, "WAIT_FOR_RIVAL_S", 1.0)  # wait one second, not half an hour
    said = []
    with pytest.raises(AtlasBundleError, match=f"another upload \\(run {rival}\\) is still running"):
        push(bundle, store, say=said.append)
    assert said == [f"waiting for run {rival}: another upload of bundle {bundle[1].bundle_sha256[:12]} is in progress "
                    f"(waiting up to 1 s)"]
