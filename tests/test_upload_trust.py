"""No run claims a bundle it does not hold: re-uploads, reuse, killed and concurrent uploads,
against real sqlite stores, a real `mlflow server` and real processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import project_env
from ml_atlas_sdk.bundle import MANIFEST, build_manifest
from ml_atlas_sdk.mlflow_store import push_bundle
from servers import mlflow_server

# A real uploader process: imports, says "ready", waits for its go file, pushes, prints the result.
WORKER = r"""
import json, sys, time
from pathlib import Path
from ml_atlas_sdk.bundle import Manifest
from ml_atlas_sdk.mlflow_store import push_bundle
pause = float(sys.argv[1])
for trial, spec in enumerate(json.loads(sys.argv[2])):
    bundle_dir = Path(spec["bundle"])
    m = json.loads((bundle_dir / "manifest.json").read_text())
    manifest = Manifest(m["files"], m["bundle_sha256"])
    def on_file(name, done, total):
        print(f"uploaded {done}/{total}", flush=True)
        if pause and done == 2:
            time.sleep(pause)
    print(f"ready {trial}", flush=True)
    while not Path(spec["go"]).exists():
        time.sleep(0.002)
    r = push_bundle(bundle_dir, manifest, {"model_name": "m"}, {"atlas.bundle_sha256": manifest.bundle_sha256},
                    tracking_uri=spec["uri"], experiment="exp", on_file=on_file)
    print("result " + json.dumps({"run_id": r.run_id, "reused": r.reused}), flush=True)
"""


def make_bundle(root: Path, seed: int, n_files: int = 6) -> tuple[Path, object]:
    bundle_dir = root / f"bundle_{seed}_{n_files}" / "atlas"
    bundle_dir.mkdir(parents=True)
    for i in range(n_files):
        (bundle_dir / f"file_{i}.bin").write_bytes(bytes([seed, i]) * (100 + i))
    manifest = build_manifest(bundle_dir)
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest.to_dict()))
    return bundle_dir, manifest


def push(bundle, uri, **kw):
    bundle_dir, manifest = bundle
    return push_bundle(bundle_dir, manifest, {"model_name": "m"}, {"atlas.bundle_sha256": manifest.bundle_sha256},
                       tracking_uri=uri, experiment="exp", **kw)


def all_runs(uri):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp")
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=100)


def stored(uri, run_id):
    return {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id, "atlas")}


def fail_at(n):
    def on_file(name, done, total):
        if done == n:
            raise OSError("network gone")
    return on_file


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_reupload_into_a_run_replaces_its_files_and_tag(tmp_path, store):
    big, small = make_bundle(tmp_path, 1, 6), make_bundle(tmp_path, 2, 3)
    run_id = push(big, store).run_id
    again = push(small, store, run_id=run_id)
    assert again.run_id == run_id and not again.reused
    assert stored(store, run_id) == {f"atlas/file_{i}.bin" for i in range(3)} | {"atlas/manifest.json"}
    run = MlflowClient(tracking_uri=store).get_run(run_id)
    assert run.data.tags["atlas.bundle_sha256"] == small[1].bundle_sha256
    assert run.data.tags["atlas.bundle_complete"] == "true" and run.info.status == "FINISHED"


def test_failed_reupload_leaves_no_complete_tag_and_is_never_reused(tmp_path, store):
    old, new = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    run_id = push(old, store).run_id
    with pytest.raises(OSError):
        push(new, store, run_id=run_id, on_file=fail_at(3))
    run = MlflowClient(tracking_uri=store).get_run(run_id)
    assert run.info.status == "FAILED" and "atlas.bundle_complete" not in run.data.tags
    assert push(old, store).run_id != run_id
    assert push(new, store).run_id != run_id


def test_reuse_skips_failed_running_and_emptied_runs(tmp_path, store):
    bundle = make_bundle(tmp_path, 1)
    client = MlflowClient(tracking_uri=store)
    first = push(bundle, store).run_id
    client.set_terminated(first, status="FAILED")  # the old bug's state: FAILED yet tagged complete
    second = push(bundle, store)
    assert not second.reused and second.run_id != first
    client.update_run(second.run_id, status="RUNNING")  # complete-tagged, still RUNNING, no uploader
    client.delete_tag(second.run_id, "atlas.upload_owner")
    third = push(bundle, store)
    assert not third.reused and third.run_id not in {first, second.run_id}

    shutil.rmtree(tmp_path / "mlartifacts")  # issue 7.6: the artifact folder was deleted
    said = []
    fourth = push(bundle, store, say=said.append)
    assert not fourth.reused and fourth.run_id != third.run_id
    assert len(said) == 1 and f"not reusing run {third.run_id}" in said[0] and "file_0.bin" in said[0]
    assert push(bundle, store).run_id == fourth.run_id  # a good run is reused


def test_killed_upload_is_marked_failed_by_the_next_one(tmp_path, store):
    bundle = make_bundle(tmp_path, 1)
    spec = [{"bundle": str(bundle[0]), "uri": store, "go": str(tmp_path / "go")}]
    (tmp_path / "go").touch()
    proc = subprocess.Popen([sys.executable, "-c", WORKER, "60", json.dumps(spec)], cwd=tmp_path,
                            env=project_env(), stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("uploaded 2/"):
            break
    os.kill(proc.pid, signal.SIGKILL)  # kill -9 mid-upload, then reap it as a shell would
    proc.wait()
    (orphan,) = all_runs(store)
    assert orphan.info.status == "RUNNING"

    said = []
    pushed = push(bundle, store, say=said.append)
    assert said == [f"marked orphaned run {orphan.info.run_id} of bundle {bundle[1].bundle_sha256[:12]} FAILED: "
                    f"its upload (pid {proc.pid} on {os.uname().nodename}) is gone"]
    client = MlflowClient(tracking_uri=store)
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert not pushed.reused and client.get_run(pushed.run_id).data.tags["atlas.bundle_complete"] == "true"


def race(tmp_path: Path, specs: list[dict]) -> list[list[dict]]:
    """Two real processes push each spec's bundle at the same instant; their results per trial."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, "0", json.dumps(specs)], cwd=tmp_path, env=project_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for trial, spec in enumerate(specs):
        for proc in procs:
            _read_until(proc, f"ready {trial}")
        Path(spec["go"]).touch()
        results.append([json.loads(_read_until(proc, "result ")[len("result "):]) for proc in procs])
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    return results


def _read_until(proc, prefix: str) -> str:
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    proc.wait(timeout=60)
    raise AssertionError(f"worker exited {proc.returncode} before {prefix!r}: {proc.stderr.read()[-3000:]}")


def assert_one_complete_run(uri, trial_results, sha):
    ids = {r["run_id"] for r in trial_results}
    assert len(ids) == 1 and sorted(r["reused"] for r in trial_results) == [False, True], trial_results
    complete = [r for r in all_runs(uri) if r.data.tags.get("atlas.bundle_sha256") == sha
                and r.data.tags.get("atlas.bundle_complete") == "true"]
    assert [r.info.run_id for r in complete] == list(ids)


TRIALS = 3  # per store: each trial is a fresh race (a new bundle; for sqlite, a new file)


def test_concurrent_uploads_to_a_fresh_sqlite_file_make_one_run(tmp_path):
    bundles = [make_bundle(tmp_path, t + 10) for t in range(TRIALS)]
    specs = [{"bundle": str(b[0]), "uri": f"sqlite:///{tmp_path / f'fresh_{t}.db'}", "go": str(tmp_path / f"go_{t}")}
             for t, b in enumerate(bundles)]
    for spec, bundle, results in zip(specs, bundles, race(tmp_path, specs)):
        assert_one_complete_run(spec["uri"], results, bundle[1].bundle_sha256)


def test_concurrent_uploads_to_an_mlflow_server_make_one_run(tmp_path):
    (tmp_path / "server").mkdir()
    with mlflow_server(tmp_path / "server", "http://127.0.0.1:9", str(tmp_path / "server" / "artifacts")) as uri:
        bundles = [make_bundle(tmp_path, t + 20) for t in range(TRIALS)]
        specs = [{"bundle": str(b[0]), "uri": uri, "go": str(tmp_path / f"go_{t}")} for t, b in enumerate(bundles)]
        for bundle, results in zip(bundles, race(tmp_path, specs)):
            assert_one_complete_run(uri, results, bundle[1].bundle_sha256)
        # Re-upload into a run through the server's artifact proxy: stale files are deleted there too.
        small = make_bundle(tmp_path, 30, 2)
        run_id = all_runs(uri)[0].info.run_id
        assert push(small, uri, run_id=run_id).run_id == run_id
        assert stored(uri, run_id) == {"atlas/file_0.bin", "atlas/file_1.bin", "atlas/manifest.json"}


def test_a_copied_project_uses_its_own_mlartifacts(tmp_path, monkeypatch):
    """Issue 8.8: MLflow records ./mlartifacts as an absolute path; a copy must not write into the original."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    bundle, other = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    monkeypatch.chdir(original)
    first = push(bundle, f"sqlite:///{original / 'mlflow.db'}")
    shutil.copytree(original, copy)
    shutil.rmtree(original / "mlartifacts")  # whatever the copy does next cannot touch it

    monkeypatch.chdir(copy)
    uri, said = f"sqlite:///{copy / 'mlflow.db'}", []
    again = push(bundle, uri, say=said.append)
    assert again.reused and again.run_id == first.run_id  # its files were found in the copy
    assert len(said) == 1 and "mlartifacts/ was copied" in said[0]
    new = push(other, uri)
    assert (copy / "mlartifacts" / new.run_id / "artifacts" / "atlas" / "file_0.bin").is_file()
    assert not (original / "mlartifacts").exists()
    assert MlflowClient(tracking_uri=uri).get_run(first.run_id).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())


def test_reupload_with_changed_params_is_refused_before_touching_the_run(tmp_path, store):
    old, new = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    run_id = push(old, store).run_id
    with pytest.raises(Exception, match=rf"run {run_id} already has param\(s\) model_name with other values"):
        push_bundle(new[0], new[1], {"model_name": "other"}, {}, tracking_uri=store, experiment="exp", run_id=run_id)
    run = MlflowClient(tracking_uri=store).get_run(run_id)
    assert run.data.tags["atlas.bundle_complete"] == "true" and run.info.status == "FINISHED"
    assert len(stored(store, run_id)) == 7
