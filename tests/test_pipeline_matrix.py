"""The paths users take, each through `dvc repro` to upload on a fresh project copy, pushed into a sqlite
store inside the copy and checked as `atlas-bundle verify` checks it (or refused as documented).

The copies are independent, so one module fixture runs their `dvc repro`s side by side (one per core);
each test then reads one copy's result."""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import make_project_copy, run, set_params
from mlflow_helpers import complete_runs
from ml_atlas_sdk.consumer import verify
from sdk_helpers import demo_model
from test_dvc_outputs import missing_outputs, plots_json

ARCHDOC_FILE = "data/demo/architecture.md"  # under data/ so DVC tracks it; written before the first run
CHECKPOINT = "data/demo/ranking_model.pt"
CHECKS = {"df_shape_dtype", "nan_inf", "calib_sample_count", "forward_scan", "roundtrip", "dynamic_axes",
          "sample_invariance", "onnx_cross_check", "drift", "fp16_range", "fp16_roundtrip", "int8_calibration_coverage"}
CHECKPOINT_MODEL = {"factory": None, "weights": None, "checkpoint": CHECKPOINT}

# case -> params to set. Every case but the checkpoint ones builds the model from factory + weights.
CASES = {
    "weights": {},
    "no_val_outputs": {"data": {"val_outputs": None}},
    "no_calibration_inputs": {"data": {"calibration_inputs": None}},
    "neither": {"data": {"val_outputs": None, "calibration_inputs": None}},
    "checks_skip_all": {"checks": {"skip": True}},
    "escalation_disabled": {"escalation": {"enabled": False}},
    # The > 2 GB path at reduced scale: weights in model.onnx.data through export, checks, upload, verify.
    "external_data": {"export": {"external_data_above_mb": 0.01}},
    "checkpoint_trusted": {"model": {**CHECKPOINT_MODEL, "trust_pickle": True}},
    "checkpoint_untrusted": {"model": CHECKPOINT_MODEL},
}
ABSENT = {"no_val_outputs": {"val_outputs_user.pt"}, "no_calibration_inputs": {"calibration_inputs.pt"},
          "neither": {"val_outputs_user.pt", "calibration_inputs.pt"}}
PUSHED = sorted(set(CASES) - {"checkpoint_untrusted"})


def fresh_copy(root: Path, params: dict) -> Path:
    project = make_project_copy(root / "project")
    (project / ARCHDOC_FILE).write_text("# Ranking model\n\nA hand-written architecture note.\n")
    torch.save(demo_model(), project / CHECKPOINT)  # the whole module, pickled
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "user files"], project)
    set_params(project, **params)
    return project


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    """case -> (project copy, its `dvc repro`), run side by side."""
    projects = {case: fresh_copy(tmp_path_factory.mktemp(case), params) for case, params in CASES.items()}
    with ThreadPoolExecutor(max_workers=min(4, max(2, os.cpu_count() or 2))) as pool:  # 4 at most: memory
        repros = {case: pool.submit(run, ["dvc", "repro"], project, check=False) for case, project in projects.items()}
        return {case: (projects[case], repros[case].result()) for case in CASES}


def pushed_and_verified(project: Path) -> set[str]:
    """The pushed bundle's file names, after checking the push end to end."""
    assert missing_outputs(project) == []
    report = json.loads((project / "reports/upload.json").read_text())
    assert report["status"] in {"pushed", "reused"}, report
    assert report["run_id"] in {r.info.run_id for r in complete_runs(project)}
    assert verify(report["run_id"], f"sqlite:///{project / 'mlflow.db'}") == []
    return {p.name for p in (project / "build/bundle/atlas").iterdir()}


@pytest.mark.parametrize("case", PUSHED)
def test_repro_pushes_a_verified_bundle(matrix, case):
    project, repro = matrix[case]
    assert repro.returncode == 0, f"{case}:\n{repro.stdout[-3000:]}\n{repro.stderr[-3000:]}"
    files = pushed_and_verified(project)
    assert {"model.onnx", "metadata.json", "val_inputs.pt", "val_outputs.pt", "validation_report.json",
            "manifest.json", "architecture.md"} <= files
    absent = ABSENT.get(case, set())
    assert files & {"val_outputs_user.pt", "calibration_inputs.pt"} == {"val_outputs_user.pt", "calibration_inputs.pt"} - absent
    if case == "checks_skip_all":
        assert set(json.loads((project / "build/bundle/atlas/validation_report.json").read_text())["skipped"]) == CHECKS
        assert plots_json(project)["reports/plots/roundtrip/ctr.csv"] == []  # headed, empty, accepted by DVC
    if case == "escalation_disabled":
        assert json.loads((project / "reports/export.json").read_text())["metrics"]["attempts"] == 1
    assert ("model.onnx.data" in files) == (case == "external_data")
    if case == "external_data":
        bundle = project / "build/bundle/atlas"
        assert (bundle / "model.onnx").stat().st_size < 10 * 1024 < (bundle / "model.onnx.data").stat().st_size
        assert "model.onnx.data" in json.loads((bundle / "manifest.json").read_text())["files"]
        invariance = json.loads((project / "reports/invariance.json").read_text())
        assert invariance["verdicts"]["sample_invariance"] == "passed"  # both slices name the same data file


def test_untrusted_checkpoint_is_refused_in_one_line(matrix):
    project, refused = matrix["checkpoint_untrusted"]
    assert refused.returncode != 0
    assert f"error: model.checkpoint: {CHECKPOINT} is a pickled module" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (project / "reports/upload.json").exists() and complete_runs(project) == []


def test_each_archdoc_source_reruns_only_archdoc_and_upload(matrix):
    """On the weights copy (archdoc.source auto, no API key: the structural document)."""
    project, _ = matrix["weights"]
    assert json.loads((project / "reports/archdoc.json").read_text())["metrics"]["origin"] == "structural"
    for source, origin in ((None, "none"), (ARCHDOC_FILE, "file")):
        set_params(project, archdoc={"source": source})
        again = run(["dvc", "repro"], project)
        assert {line.split("'")[1] for line in again.stdout.splitlines() if line.startswith("Running stage")} == {"archdoc", "upload"}
        assert json.loads((project / "reports/archdoc.json").read_text())["metrics"]["origin"] == origin
        assert ("architecture.md" in pushed_and_verified(project)) == (source is not None)
    assert (project / "build/bundle/atlas/architecture.md").read_text() == (project / ARCHDOC_FILE).read_text()
    assert len(complete_runs(project)) == 3
