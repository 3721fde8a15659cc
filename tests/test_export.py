"""The export stage: escalation ladder, readable console, forward_scan, export sample."""
from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import run, set_params
from fixture_models import fold_model
from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.checks import SkipPolicy, Verdict, run_check
from ml_atlas_sdk.demo.ranking import build_model as build_demo_model
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.export.escalation import Judge, export_with_escalation
from ml_atlas_sdk.export import sampling
from ml_atlas_sdk.export.sampling import select_export_rows
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import run_canonical
from ml_atlas_sdk.tensors import write_frame

FOLD_ROWS = 40
ATTEMPT_LINE = re.compile(r"^\s+attempt \d+ \(", re.MULTILINE)


def fold_inputs(rows: int = FOLD_ROWS) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {"patches": torch.randn(rows, fold_model.PATCH_ROWS, fold_model.BLOCKS, generator=gen)}


def use_fold_model(project: Path) -> None:
    """Point a project copy's params at the opset-18 fold model in its own models/ code dir."""
    (project / "models").mkdir(exist_ok=True)
    shutil.copy(Path(fold_model.__file__), project / "models" / "fold_model.py")
    patches = fold_inputs()["patches"].numpy()
    write_frame(pd.DataFrame({"patches": list(patches)}), project / "data" / "fold" / "val_inputs.parquet")
    set_params(
        project,
        model={"name": "fold_model", "factory": "fold_model:build_model", "kwargs": {}, "weights": None,
               "checkpoint": None, "code_dirs": ["models"]},
        metadata=fold_model.metadata(),
        data={"val_inputs": "data/fold/val_inputs.parquet", "val_outputs": None, "calibration_inputs": None},
    )


def read_export_report(project: Path) -> dict:
    return json.loads((project / "reports" / "export.json").read_text())


def test_opset18_model_is_accepted_at_ladder_step_1_and_fails_cleanly_without_escalation(project):
    use_fold_model(project)
    run(["python", "stages/tensorize.py"], project)
    run(["python", "stages/canonical_outputs.py"], project)

    escalated = run(["python", "stages/export.py"], project)
    report = read_export_report(project)
    attempts = report["attempts"]
    assert [a["status"] for a in attempts] == ["export_failed", "passed"]
    assert attempts[0]["overrides"] == {}
    assert attempts[0]["settings"] == {"opset": 17, "do_constant_folding": True, "dynamo": False, "batch_size": 64,
                                       "external_data_above_mb": 2048}
    assert attempts[0]["error"].startswith("UnsupportedOperatorError")
    assert "col2im" in attempts[0]["error"] and "\n" not in attempts[0]["error"]
    assert attempts[1]["overrides"] == {"opset": 18}
    assert attempts[1]["settings"]["opset"] == 18 and attempts[1]["error"] is None
    assert report["metrics"]["accepted"] is True and report["metrics"]["accepted_step"] == 1
    assert report["settings_used"]["opset"] == 18 and report["settings_used"]["escalation_step"] == 1
    assert report["verdicts"]["onnx_cross_check"] == "passed"
    assert (project / "build" / "onnx" / "model.onnx").is_file()
    # The exporter dumps the whole TorchScript graph on failure: it belongs in the report, not on
    # the console, which shows one line per attempt.
    assert "Torch IR graph" in attempts[0]["log"]
    assert "Torch IR graph" not in escalated.stdout + escalated.stderr
    assert len(ATTEMPT_LINE.findall(escalated.stdout)) == 2
    # Stage scripts run through Hydra, which must leave no outputs/ or .hydra/ behind.
    assert not (project / "outputs").exists() and not (project / ".hydra").exists()

    failed = run(["python", "stages/export.py", "escalation.enabled=false"], project, check=False)
    assert failed.returncode == 2, failed.stderr
    error_lines = failed.stderr.strip().splitlines()
    assert len(error_lines) == 1, failed.stderr
    assert error_lines[0].startswith("error: export: none of 1 attempt(s)") and "col2im" in error_lines[0]
    assert "Traceback" not in failed.stderr and "Torch IR graph" not in failed.stdout
    assert len(ATTEMPT_LINE.findall(failed.stdout)) == 1
    report = read_export_report(project)
    assert [a["status"] for a in report["attempts"]] == ["export_failed"]
    assert "col2im" in report["attempts"][0]["error"] and "Torch IR graph" in report["attempts"][0]["log"]
    assert report["metrics"]["accepted"] is False and report["settings_used"] is None
    # The accepted model of the previous run (and its export_info) must not survive a failed export.
    onnx_dir = project / "build" / "onnx"
    assert not onnx_dir.exists() or not any(onnx_dir.iterdir())


class ItemModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        scale = x.abs().max().item()
        return self.linear(x) / scale


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = ItemModel()

    def forward(self, x):
        return self.inner(x) * 2


def item_call_line() -> int:
    lines, first = inspect.getsourcelines(ItemModel.forward)
    return first + next(i for i, line in enumerate(lines) if ".item()" in line)


@pytest.mark.parametrize("model", [ItemModel(), Wrapper()], ids=["direct", "in_submodule"])
def test_forward_scan_warns_with_file_and_line_of_item_call(model):
    result = run_check("forward_scan", model, skip=SkipPolicy([]))
    assert result.verdict is Verdict.WARNED
    where = f"{inspect.getsourcefile(ItemModel)}:{item_call_line()}"
    assert where in result.message and ".item()" in result.message
    assert [w for w in result.details["warnings"] if w.startswith(where)] == result.details["warnings"]
    assert len(result.details["warnings"]) == 1  # Wrapper.forward itself is clean


def test_forward_scan_passes_a_clean_model_and_honours_skip():
    assert run_check("forward_scan", build_demo_model(), skip=SkipPolicy([])).verdict is Verdict.PASSED
    assert run_check("forward_scan", ItemModel(), skip=SkipPolicy(["forward_scan"])).verdict is Verdict.SKIPPED


def test_escalation_skips_duplicate_steps_and_samples_at_most_batch_size_rows(tmp_path):
    model = fold_model.build_model()
    meta = ModelMetadata.from_config(fold_model.metadata())
    inputs = fold_inputs()
    canonical = run_canonical(model, inputs, meta.input_names, meta.output_names, 256, progress=False)
    settings = ExportSettings.from_config({"batch_size": 8, "opset": 17})
    # Steps 1 and 2 resolve to the configured settings (folding is on by default): no re-export.
    ladder = [{}, {"do_constant_folding": True}, {"opset": 18}, {"opset": 20}]
    seen = []
    out = tmp_path / "onnx" / "model.onnx"
    tol = rt.Tolerance(1e-2, 5e-2)
    judge = Judge({n: tol for n in meta.output_names}, tol, rows_per_run=256, localize_rows=8)
    outcome = export_with_escalation(
        model, inputs, canonical, meta, settings, ladder, True, judge, out,
        on_attempt=lambda a: seen.append((a.step, a.status)),
    )
    assert [(a.step, a.status) for a in outcome.attempts] == [(0, "export_failed"), (1, "duplicate"), (2, "duplicate"), (3, "passed")]
    assert seen == [(a.step, a.status) for a in outcome.attempts]
    for dup in outcome.attempts[1:3]:
        assert dup.error == "same settings as attempt 0"
        assert dup.log == "" and dup.seconds == 0.0 and dup.roundtrip == {}
    assert outcome.accepted and outcome.chosen.step == 3
    assert 2 <= len(outcome.sample_rows) <= settings.batch_size
    assert outcome.sample_rows == sorted(set(outcome.sample_rows))
    graph = onnx.load(out)
    assert {o.domain: o.version for o in graph.opset_import}[""] == 18
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # no attempt leftovers


@pytest.mark.parametrize("width", [8, 1000], ids=["narrow", "projected"])
def test_export_sample_includes_the_rows_that_differ(width):
    base = np.ones((55, width), dtype=np.float32)
    outliers = [3, 17, 30, 51, 54]
    for k, row in enumerate(outliers):
        base[row, k] += 10.0  # each outlier differs from the crowd along its own feature
    picked = select_export_rows({"x": torch.from_numpy(base), "ids": torch.zeros(55, 3, dtype=torch.int64)}, 6)
    assert len(picked) == 6
    assert set(outliers) <= set(picked.tolist())


def test_a_large_validation_set_is_sampled_from_a_seeded_subset(monkeypatch):
    """Above MAX_CANDIDATES rows the sampler works on a random subset: the rows it returns are
    still distinct, sorted, spread over the file and the same on every run."""
    monkeypatch.setattr(sampling, "MAX_CANDIDATES", 50)
    inputs = {"x": torch.randn(1000, 4, generator=torch.Generator().manual_seed(1))}
    picked = select_export_rows(inputs, 8).tolist()
    assert len(set(picked)) == 8 and picked == sorted(picked) and max(picked) - min(picked) > 300
    assert select_export_rows(inputs, 8).tolist() == picked


def test_export_sample_size_bounds():
    inputs = {"x": torch.randn(5, 3)}
    assert select_export_rows(inputs, 64).tolist() == [0, 1, 2, 3, 4]  # fewer rows than batch_size
    assert len(select_export_rows(inputs, 1)) == 2  # a batch of 1 would freeze the batch axis
    with pytest.raises(AtlasInputError, match="export.batch_size"):
        ExportSettings.from_config({"batch_size": 1})
    with pytest.raises(AtlasInputError, match="at least 2"):
        select_export_rows({"x": torch.randn(1, 3)}, 64)
