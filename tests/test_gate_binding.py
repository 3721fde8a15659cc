"""Issue 25: the upload pushes exactly what its verdicts judged, under the project's settings, and a
report never says "pushed" for a run that is not in the project's store. One real `dvc repro` of the
demo, then each way the old gate was fooled, against the real upload stage and a real sqlite store."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import onnx
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import make_project_copy, project_env, run, set_params

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    project = make_project_copy(tmp_path_factory.mktemp("gate") / "project")
    run(["dvc", "repro"], project)
    return project


def _store(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _runs(project: Path, experiment: str = "atlas-bundles") -> list:
    client = _store(project)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=100)


def _refused(project: Path, *overrides: str) -> str:
    """`python stages/upload.py` as the README runs a stage by hand: refused in one line, nothing pushed."""
    before = len(_runs(project))
    result = run(["python", "stages/upload.py", *overrides], project, check=False)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert len(_runs(project)) == before
    assert json.loads((project / "reports/upload.json").read_text())["status"] == "refused"
    return lines[0]


def test_a_push_is_never_restored_from_the_run_cache(built):
    """After the store is reset, DVC used to restore reports/upload.json ("pushed", a run id) from
    its run cache and push nothing. The upload stage keeps no run cache: it runs and pushes.
    First in this module: its deps must be exactly those of the run DVC cached."""
    (built / "mlflow.db").unlink()
    shutil.rmtree(built / "mlartifacts")
    (built / "reports/upload.json").unlink()
    repro = run(["dvc", "repro"], built)
    assert "Restored stage 'upload'" not in repro.stdout and "Running stage 'upload'" in repro.stdout
    report = json.loads((built / "reports/upload.json").read_text())
    assert report["status"] == "pushed"
    stored = _store(built).get_run(report["run_id"])
    assert stored.info.status == "FINISHED" and stored.data.tags["atlas.bundle_complete"] == "true"


def test_a_swapped_model_onnx_is_refused(built):
    model = built / "build/onnx/model.onnx"
    original = model.read_bytes()
    swapped = onnx.load(str(model))
    swapped.doc_string = "another export"  # any other model: the verdicts judged the original
    try:
        onnx.save(swapped, str(model))
        line = _refused(built)
        assert "reports/export.json: stale verdict: build/onnx/model.onnx" in line and "dvc repro export" in line
    finally:
        model.write_bytes(original)


def test_an_edited_verdict_is_refused(built):
    params = (built / "params.yaml").read_text()
    try:
        set_params(built, drift={"tolerance_mse": 0.0, "tolerance_max_abs": 0.0})
        run(["python", "stages/drift.py"], built)  # a real failed verdict, under params.yaml
        report = built / "reports/drift.json"
        assert '"failed"' in report.read_text()
        report.write_text(report.read_text().replace('"failed"', '"passed"'))
        line = _refused(built)
        assert line.startswith("error: reports/drift.json: stale verdict: its content was changed")
    finally:
        (built / "params.yaml").write_text(params)
        run(["python", "stages/drift.py"], built)


def test_a_hand_run_relaxed_drift_is_refused(built):
    try:
        run(["python", "stages/drift.py", "drift.tolerance_max_abs=100"], built)
        line = _refused(built)
        assert line.startswith("error: reports/drift.json: stale verdict: it was judged under other settings drift ")
        # Nor does the same override on the upload make it push settings that are not params.yaml's.
        line = _refused(built, "drift.tolerance_max_abs=100")
        assert line.startswith("error: reports/drift.json: stale verdict: it was judged under other settings drift ")
    finally:
        run(["python", "stages/drift.py"], built)
    line = _refused(built, "metadata.task_type=other")  # the upload alone under other settings
    assert "the upload was given settings metadata other than params.yaml" in line
    # Back under params.yaml, the bundle goes through again.
    again = run(["python", "stages/upload.py"], built)
    assert json.loads((built / "reports/upload.json").read_text())["status"] in ("pushed", "reused"), again.stdout


def test_a_queued_experiment_pushes_into_the_projects_store(built):
    """`dvc exp run --queue` runs in a temporary copy under .dvc/tmp/exps/; `sqlite:///mlflow.db`
    there must still mean the project's own store, not one deleted with the copy."""
    run(["dvc", "repro"], built)  # dvc.lock in step with the reports the stages above rewrote
    run(["git", "add", "-A"], built)
    run(["git", "commit", "-q", "-m", "built"], built)
    run(["dvc", "exp", "run", "--queue", "-S", "mlflow.experiment=queued"], built)
    try:
        subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=built, env=project_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            shown = run(["dvc", "queue", "status"], built).stdout
            if not any(w in shown for w in ("Queued", "Running")):
                break
            time.sleep(2)
        assert "Success" in shown, shown
    finally:
        _kill_queue_workers(built)
    (queued,) = _runs(built, "queued")
    assert queued.info.status == "FINISHED" and queued.data.tags["atlas.bundle_complete"] == "true"
    assert Path(queued.info.artifact_uri.removeprefix("file://")).is_relative_to(built / "mlartifacts")
    assert not list((built / ".dvc/tmp").rglob("mlflow.db"))


def _kill_queue_workers(project: Path) -> None:
    """The queue's detached workers (as bench/figures_pipeline.py does): ours only, by pid."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"queue-worker" in (proc / "cmdline").read_bytes() and \
                    Path(os.readlink(proc / "cwd")).resolve().is_relative_to(project.resolve()):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def test_the_stage_list_mirrors_dvc_yaml():
    """judged.STAGES names each stage's build folders and settings as dvc.yaml declares them."""
    from conftest import REPO_ROOT
    from ml_atlas_sdk.pipeline.judged import STAGES

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, (folders, keys) in STAGES.items():
        declared = [*stages[name].get("deps", []), *(next(iter(o)) if isinstance(o, dict) else o for o in stages[name].get("outs", []))]
        assert sorted(folders) == sorted(p for p in declared if str(p).startswith("build/") and not str(p).startswith("build/model_code")), name
        assert list(keys) == stages[name]["params"], name
