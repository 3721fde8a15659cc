"""Every path dvc.yaml declares is written by its stage on every path through it, and nothing stale
outlives a failed stage. Real `dvc repro` in one fresh project copy for the module."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import make_project_copy, run, set_params


def declared_outputs(project: Path) -> dict[str, list[str]]:
    """stage -> every `outs`/`metrics`/`plots` path dvc.yaml declares for it."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return {
        name: [next(iter(e)) if isinstance(e, dict) else e for key in ("outs", "metrics", "plots") for e in stage.get(key, [])]
        for name, stage in stages.items()
    }


def missing_outputs(project: Path, stages: list[str] | None = None) -> list[str]:
    declared = declared_outputs(project)
    return [f"{stage}: {path}" for stage in stages or declared for path in declared[stage] if not (project / path).exists()]


def plots_json(project: Path) -> dict:
    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert not shown.get("errors"), shown.get("errors")
    return shown["data"]


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """A project with no optional input at all: no user outputs, no calibration, no archdoc."""
    project = make_project_copy(tmp_path_factory.mktemp("outputs") / "project")
    set_params(project, data={"val_outputs": None, "calibration_inputs": None}, archdoc={"source": None},
               upload={"dry_run": True})
    run(["dvc", "repro"], project)
    return project


def test_every_declared_output_exists_when_optional_inputs_are_absent(bare):
    assert missing_outputs(bare) == []
    assert "up to date" in run(["dvc", "status"], bare).stdout  # DVC took every output as written
    drift = json.loads((bare / "reports/drift.json").read_text())
    assert drift["verdicts"]["drift"] == "skipped"
    # The skipped drift's plot folder holds a headed CSV per output: shown by DVC, with no points.
    plots = plots_json(bare)
    assert plots["reports/plots/drift/ctr.csv"] == [] and plots["reports/plots/drift/logits.csv"] == []
    assert (bare / "reports/plots/drift/ctr.csv").read_text().splitlines() == ["percentile,abs_err"]
    assert len(plots["reports/plots/roundtrip/ctr.csv"][0]["content"]["data"]["values"]) == 101
    # A passing round-trip is not localized: its depth plot is a header with no points.
    assert plots["reports/plots/localization/error_by_depth.csv"] == []
    assert list((bare / "build/archdoc").iterdir()) == []  # archdoc.source: null writes no document
    # The precision stage ran: its report holds each module's range, the plot one point per module
    # and column (activation, FP16 limit), and no calibration means coverage skipped.
    precision = json.loads((bare / "reports/precision.json").read_text())
    assert precision["verdicts"] == {"fp16_range": "passed", "fp16_roundtrip": "passed",
                                     "int8_calibration_coverage": "skipped"}
    assert precision["metrics"]["seconds"]["fp32_hooks"] > 0 and precision["metrics"]["seconds"]["fp16"] > 0
    depth = plots["fp16_activation_range"][0]["content"]["data"]["values"]
    assert len(depth) == 2 * len(precision["modules"]) > 0
    shown = json.loads(run(["dvc", "exp", "show", "--json"], bare).stdout)
    assert shown and shown[0]["rev"] == "workspace"


def test_a_failed_check_still_writes_its_outputs(bare):
    """Reference outputs far from the model's: drift fails, and its stage still writes all it declares."""
    import numpy as np
    import pandas as pd

    from ml_atlas_sdk.tensors import write_frame

    outputs = pd.read_parquet(bare / "data/demo/val_outputs.parquet")
    write_frame(pd.DataFrame({c: [np.asarray(v) + 1.0 for v in outputs[c]] for c in outputs.columns}),
                bare / "data/demo/far_outputs.parquet")
    set_params(bare, data={"val_outputs": "data/demo/far_outputs.parquet"})
    run(["dvc", "repro", "drift"], bare)
    assert json.loads((bare / "reports/drift.json").read_text())["verdicts"]["drift"] == "failed"
    assert missing_outputs(bare, ["tensorize", "canonical_outputs", "export", "roundtrip", "drift"]) == []
    assert len(plots_json(bare)["reports/plots/drift/ctr.csv"][0]["content"]["data"]["values"]) == 101
    set_params(bare, data={"val_outputs": None})


def test_a_failed_standalone_stage_leaves_no_outputs_to_trust(bare):
    assert (bare / "build/tensors/val_inputs.pt").is_file()
    failed = run(["python", "stages/tensorize.py", "data.val_inputs=data/demo/missing.parquet"], bare, check=False)
    assert failed.returncode == 2, failed.stderr
    assert not (bare / "build/tensors").exists() and not (bare / "reports/tensorize.json").exists()
    # The next stage refuses instead of reading the previous run's tensors.
    after = run(["python", "stages/canonical_outputs.py"], bare, check=False)
    assert after.returncode != 0


def test_a_failed_repro_leaves_no_old_upload_report(bare):
    (bare / "reports/upload.json").write_text(json.dumps({"status": "pushed", "run_id": "0123abcd"}))
    set_params(bare, model={"kwargs": {"no_such_argument": 1}})  # the model cannot be built
    failed = run(["dvc", "repro"], bare, check=False)
    assert failed.returncode != 0 and "model.factory" in failed.stderr
    assert not (bare / "reports/upload.json").exists()


def _ran(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}


def test_model_code_outside_models_reruns_the_model_stages(bare):
    code = bare / "libs/ranking_ext"
    code.mkdir(parents=True)
    (code / "my_ranker.py").write_text("from ml_atlas_sdk.demo.ranking import build_model\n")
    set_params(bare, model={"kwargs": {}, "code_dirs": ["libs/ranking_ext"], "factory": "my_ranker:build_model"})
    first = run(["dvc", "repro", "export"], bare)
    assert "model.code_dirs" not in first.stdout + first.stderr  # no "DVC does not track it" warning
    assert "up to date" in run(["dvc", "status", "--with-deps", "export"], bare).stdout  # Python's __pycache__ is ignored

    (code / "my_ranker.py").write_text("from ml_atlas_sdk.demo.ranking import build_model  # edited\n")
    assert "model_code@libs/ranking_ext" in run(["dvc", "status", "--with-deps", "export"], bare).stdout
    assert {"model_code@libs/ranking_ext", "canonical_outputs", "export"} <= _ran(run(["dvc", "repro", "export"], bare).stdout)


def test_model_code_outside_the_project_is_refused_in_one_line(bare, tmp_path):
    (bare / "reports/upload.json").write_text(json.dumps({"status": "pushed", "run_id": "0123abcd"}))
    set_params(bare, model={"code_dirs": [str(tmp_path)]})
    refused = run(["dvc", "repro", "export"], bare, check=False)
    assert refused.returncode != 0
    assert f"error: model.code_dirs: {tmp_path} is outside the project" in refused.stderr
    assert not (bare / "reports/upload.json").exists()
    set_params(bare, model={"code_dirs": []})
