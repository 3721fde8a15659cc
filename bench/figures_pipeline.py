"""Figures 2, 3 and 6: the pipeline door against the SDK door, no-op and incremental reruns, and
queued experiments side by side against one after the other."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ml_atlas_sdk.pipeline.hydra_entry import QUIET_HYDRA

from measure import REPO, Figure, at_most, make_project_copy, measure, project_env, python, reported, set_params

STAGES = ("tensorize", "canonical_outputs", "export", "roundtrip", "invariance", "drift", "precision", "archdoc", "upload")

_SDK_DEMO = """
import sys
sys.path.insert(0, sys.argv[1])
from sdk_helpers import demo_frame, demo_metadata, demo_model
from ml_atlas_sdk import AtlasArtifactBundle, push_to_mlflow
bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                             val_outputs_df=demo_frame("val_outputs"),
                             calibration_inputs_df=demo_frame("calibration_inputs"))
push_to_mlflow(bundle, None, tracking_uri=sys.argv[2])
"""
_SDK_ZOO = """
import sys
sys.path.insert(0, sys.argv[1])
from zoo import cases
cases.ROWS = int(sys.argv[4])
from ml_atlas_sdk import AtlasArtifactBundle, ModelMetadata, push_to_mlflow
case = cases.BY_NAME[sys.argv[3]]
inputs = case.inputs()
bundle = AtlasArtifactBundle(model=case.model(), metadata=ModelMetadata(**case.metadata), val_inputs_df=case.frame(inputs),
                             export_batch_size=cases.EXPORT_BATCH)
push_to_mlflow(bundle, None, tracking_uri=sys.argv[2])
"""


def ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def pipeline_figures(quick: bool) -> list[Figure]:
    figures = []
    with tempfile.TemporaryDirectory(prefix="atlas-bench-pipe-") as tmp:
        root = Path(tmp)
        demo = make_project_copy(root / "demo")
        figures += _doors("demo", demo, python(_SDK_DEMO, str(REPO / "tests"), f"sqlite:///{root / 'sdk-demo.db'}"),
                          root, limit=1.5)
        figures += _reruns(demo)
        zoo_rows = 96 if quick else 2_000
        zoo = _zoo_project(root / "bert", "bert", zoo_rows)
        sdk = python(_SDK_ZOO, str(REPO / "tests"), f"sqlite:///{root / 'sdk-bert.db'}", "bert", str(zoo_rows))
        figures += _doors(f"bert x{zoo_rows}", zoo, sdk, root, limit=1.15)
    return figures


def _doors(label: str, project: Path, sdk_cmd: list[str], root: Path, limit: float) -> list[Figure]:
    repro = measure(["dvc", "repro"], project)
    sdk = measure(sdk_cmd, root)
    floor = _floor(project, root / f"floor-{project.name}")
    timing = {s: json.loads((project / "reports" / f"{s}.json").read_text()).get("timing") or {}
              for s in STAGES if (project / "reports" / f"{s}.json").is_file()}
    start_up = sum(t.get("start_up_s") or 0.0 for t in timing.values())
    work = sum(t.get("work_s") or 0.0 for t in timing.values())
    breakdown = " ".join(f"{s[:6]}={t.get('start_up_s') or 0:.1f}+{t.get('work_s') or 0:.1f}" for s, t in timing.items())
    return [
        at_most(f"{label}: cold dvc repro / push_to_mlflow", repro.seconds / sdk.seconds, limit,
                note=f"{repro.seconds:.1f} s vs {sdk.seconds:.1f} s"),
        reported(f"{label}: stage start-up (imports, Hydra)", start_up, " s",
                 note=f"work {work:.1f} s, DVC {repro.seconds - start_up - work:.1f} s; start-up+work: {breakdown}"),
        reported(f"{label}: lower bound (floor + SDK) / SDK", (floor + sdk.seconds) / sdk.seconds, "x",
                 note=f"floor {floor:.1f} s: {'cannot' if floor / sdk.seconds > limit - 1 else 'can'} reach {limit:g}x"),
    ]


# A stage of the floor pipeline: Python, Hydra composing params.yaml, and its outputs put back from
# the real run, nothing else (it exits without teardown, as the real stages do). No pipeline of
# these stages can do less per stage.
_FLOOR_STAGE = """
import os, shutil, sys
from pathlib import Path
import hydra

@hydra.main(config_path="..", config_name="params", version_base="1.3")
def main(cfg) -> None:
    for out in {outs!r}:
        saved = Path({saved!r}) / out
        if saved.is_dir():
            shutil.copytree(saved, out, dirs_exist_ok=True)
        elif saved.is_file():
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(saved, out)

if __name__ == "__main__":
    sys.argv += {quiet!r}
    main()
    os._exit(0)
"""


def _floor(project: Path, floor: Path) -> float:
    """Seconds of a cold `dvc repro` of the same dvc.yaml, params and data with every stage script
    replaced by one that only starts Python and Hydra and puts its real outputs back: DVC's
    bookkeeping (hashing, caching, dvc.lock) plus one Hydra start-up per stage. The pipeline pays
    that on top of the work and the one-time imports the in-process SDK also pays, so
    (floor + SDK) / SDK is a lower bound of cold repro / SDK."""
    from dvc.repo import Repo

    saved = floor.parent / f"{floor.name}-outputs"
    shutil.copytree(project, floor, ignore=shutil.ignore_patterns(".dvc", "dvc.lock"))
    shutil.copytree(project / ".dvc", floor / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    with Repo(str(project)) as repo:
        stages = {s.name: [str(o.def_path) for o in s.outs] for s in repo.index.stages
                  if s.cmd and s.cmd.startswith("python stages/")}
    for name, outs in stages.items():
        for out in outs:
            source = project / out
            if source.is_dir():
                shutil.copytree(source, saved / out)
            elif source.is_file():
                (saved / out).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, saved / out)
        (floor / "stages" / f"{name}.py").write_text(_FLOOR_STAGE.format(outs=outs, saved=str(saved), quiet=list(QUIET_HYDRA)))
    return measure(["dvc", "repro"], floor).seconds


def _reruns(project: Path) -> list[Figure]:
    noop = measure(["dvc", "repro"], project)
    measure(python("from ml_atlas_sdk.pipeline.params import main; main(['drift.tolerance_mse=0.002'])"), project)
    changed = measure(["dvc", "repro"], project)
    rerun = ran(changed.stdout)
    expected = {"drift", "upload"}
    return [
        at_most("no-op dvc repro", noop.seconds, 1.0, " s"),
        Figure("stages rerun after a drift tolerance change", len(rerun), "", "drift, upload", rerun == expected,
               ", ".join(sorted(rerun))),
    ]


def _zoo_project(root: Path, name: str, rows: int) -> Path:
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from zoo import cases

    cases.ROWS = rows
    from test_zoo import _pipeline_project

    project = _pipeline_project(cases.BY_NAME[name], root)
    set_params(project, archdoc={"source": None})
    return project


def experiment_figures(quick: bool) -> list[Figure]:
    """Queued experiments with two workers against the same experiments one after the other."""
    settings = [["-S", "export.opset=18"], ["-S", "export.do_constant_folding=false"]]
    if not quick:
        settings += [["-S", "export.opset=20"], ["-S", "export.dynamo=true", "-S", "escalation.enabled=false"]]
    with tempfile.TemporaryDirectory(prefix="atlas-bench-exp-") as tmp:
        project = make_project_copy(Path(tmp) / "project")
        measure(["dvc", "repro", "roundtrip"], project)
        measure(["git", "add", "-A"], project)
        measure(["git", "commit", "-q", "-m", "baseline"], project)
        one_by_one = sum(measure(["dvc", "exp", "run", "--temp", *s, "roundtrip"], project).seconds for s in settings)
        for s in settings:
            measure(["dvc", "exp", "run", "--queue", *s, "roundtrip"], project)
        queued = _run_queue(project, workers=2)
    return [reported(f"{len(settings)} experiments: queue -j 2 / one by one", queued / one_by_one, "x",
                     note=f"{queued:.0f} s vs {one_by_one:.0f} s")]


def _run_queue(project: Path, workers: int) -> float:
    """Seconds from `dvc queue start` until no experiment is queued or running.

    The workers are detached processes that inherit the caller's stdout and stderr: captured, those
    pipes would hold the measurement open until every worker exits, and a worker sometimes hangs
    after "shutting down due to empty queue". So their output goes to /dev/null, the queue's state
    is polled, and the workers left in the project are killed afterwards.
    """
    started = time.perf_counter()
    try:
        subprocess.run(["dvc", "queue", "start", "-j", str(workers)], cwd=project, env=project_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        measure(python(_WAIT_QUEUE), project)
        return time.perf_counter() - started
    finally:
        _kill_queue_workers(project)


def _kill_queue_workers(project: Path) -> None:
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"queue-worker" in (proc / "cmdline").read_bytes() and \
                    Path(os.readlink(proc / "cwd")).resolve().is_relative_to(project.resolve()):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue


# The queue is done when no experiment is queued or running.
_WAIT_QUEUE = """
import subprocess, time
while True:
    shown = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True).stdout
    if not any(w in shown for w in ("Queued", "Running")):
        break
    time.sleep(1)
"""
