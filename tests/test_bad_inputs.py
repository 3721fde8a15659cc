"""Bad input stops a stage with one readable line naming the culprit (exit 2, no traceback),
while failed checks record their verdict and exit 0."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import make_project_copy, run
from ml_atlas_sdk.demo.ranking import build_model
from ml_atlas_sdk.tensors import write_frame


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One project copy, tensorized once, shared: each test writes its own bad file beside it."""
    root = make_project_copy(tmp_path_factory.mktemp("bad") / "project")
    run(["python", "stages/tensorize.py"], root)
    run(["python", "stages/canonical_outputs.py"], root)
    return root


def _fails_with(project, stage: str, *overrides: str) -> str:
    result = run(["python", f"stages/{stage}.py", *overrides], project, check=False)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _val_frame(project) -> pd.DataFrame:
    return pd.read_parquet(project / "data/demo/val_inputs.parquet")


def test_missing_column(project):
    write_frame(_val_frame(project).drop(columns=["dense"]), project / "data/no_dense.parquet")
    line = _fails_with(project, "tensorize", "data.val_inputs=data/no_dense.parquet")
    assert "data/no_dense.parquet" in line and "missing column(s) ['dense']" in line


def test_wrong_cell_shape_names_column_and_row(project):
    frame = _val_frame(project)
    dense = [np.asarray(v) for v in frame["dense"]]
    dense[7] = dense[7][:15]
    table = pa.table({"tokens": pa.array([np.asarray(v) for v in frame["tokens"]]), "dense": pa.array(dense)})
    pq.write_table(table, project / "data/ragged.parquet")
    line = _fails_with(project, "tensorize", "data.val_inputs=data/ragged.parquet")
    assert "column 'dense' row 7" in line


def test_consistently_wrong_shape_fails_the_check(project):
    frame = _val_frame(project)
    frame["dense"] = [np.asarray(v)[:15] for v in frame["dense"]]
    write_frame(frame, project / "data/narrow.parquet")
    result = run(["python", "stages/tensorize.py", "data.val_inputs=data/narrow.parquet", "data.val_outputs=null",
                  "data.calibration_inputs=null"], project)
    check = _check(project, "tensorize", "df_shape_dtype", "val_inputs")
    assert check["verdict"] == "failed" and "column 'dense'" in check["message"] and "16" in check["message"]
    assert result.returncode == 0


def test_nan_in_inputs_fails_nan_inf_naming_column_and_count(project):
    frame = _val_frame(project)
    dense = np.stack(frame["dense"].to_numpy()).copy()
    dense[3, 2] = np.nan
    dense[9, 0] = np.inf
    frame["dense"] = list(dense)
    write_frame(frame, project / "data/nan.parquet")
    try:
        result = run(["python", "stages/tensorize.py", "data.val_inputs=data/nan.parquet"], project, check=False)
        # A failed check is a verdict for the upload gate to act on, not a crash of the stage.
        assert result.returncode == 0, result.stderr
        report = json.loads((project / "reports/tensorize.json").read_text())
        assert report["verdicts"]["nan_inf[val_inputs]"] == "failed"
        assert report["verdicts"]["nan_inf[val_outputs_user]"] == "passed"  # only the culprit file fails
        check = _check(project, "tensorize", "nan_inf", "val_inputs")
        assert "column 'dense' has 2 NaN/Inf value(s), first at row 3" in check["message"]
        assert "nan_inf[val_inputs]" in result.stdout and "failed" in result.stdout
    finally:
        run(["python", "stages/tensorize.py"], project)  # later tests need the good tensors


@pytest.mark.parametrize("overrides, expected", [
    (["metadata.onnx_opset=16"], "metadata.onnx_opset: 16 is below the minimum opset 17"),
    (["~metadata.dynamic_axes.logits", "+metadata.dynamic_axes.logits={1:x}"], "dynamic_axes['logits'] must list axis 0"),
    (["+metadata.dynamic_axes.bogus={0:batch}"], "dynamic_axes names 'bogus', which is neither an input nor an output"),
    (["checks.skip=[no_such_check]"], "checks.skip: unknown check name(s) ['no_such_check']"),
])
def test_bad_metadata_and_settings(project, overrides, expected):
    assert expected in _fails_with(project, "tensorize", *overrides)


def test_weights_with_missing_and_unexpected_keys(project):
    state = build_model().state_dict()
    state["extra.weight"] = state.pop("ctr_head.weight")
    torch.save(state, project / "data/bad_weights.pt")
    line = _fails_with(project, "canonical_outputs", "model.weights=data/bad_weights.pt")
    assert "model.weights: data/bad_weights.pt does not match the model" in line
    assert "missing keys ['ctr_head.weight']" in line and "unexpected keys ['extra.weight']" in line


def test_factory_that_cannot_be_imported(project):
    line = _fails_with(project, "canonical_outputs", "model.factory=no_such_package.models:build")
    assert "model.factory: cannot import module 'no_such_package.models'" in line


def test_pickled_checkpoint_needs_trust_pickle(project):
    torch.save(build_model(), project / "data/whole_model.pt")
    line = _fails_with(project, "canonical_outputs", "model.checkpoint=data/whole_model.pt")
    assert "model.checkpoint: data/whole_model.pt is a pickled module" in line and "model.trust_pickle" in line
    run(["python", "stages/canonical_outputs.py", "model.checkpoint=data/whole_model.pt", "model.trust_pickle=true"], project)


def test_a_pickle_passed_as_weights_is_refused(project):
    with open(project / "data/pickled_weights.pt", "wb") as handle:
        pickle.dump(build_model(), handle)
    line = _fails_with(project, "canonical_outputs", "model.weights=data/pickled_weights.pt")
    assert "model.weights: data/pickled_weights.pt" in line


def test_unreadable_parquet(project):
    (project / "data/broken.parquet").write_bytes(b"PAR1 this is not parquet")
    line = _fails_with(project, "tensorize", "data.val_inputs=data/broken.parquet")
    assert "data.val_inputs: data/broken.parquet is not a readable Parquet file" in line


def test_zero_rows(project):
    pq.write_table(pq.read_table(project / "data/demo/val_inputs.parquet").slice(0, 0), project / "data/empty.parquet")
    line = _fails_with(project, "tensorize", "data.val_inputs=data/empty.parquet")
    assert "data.val_inputs: data/empty.parquet has zero rows" in line


def test_a_failed_stage_leaves_no_half_written_outputs(project):
    run(["python", "stages/tensorize.py"], project)
    assert (project / "build/tensors/val_inputs.pt").is_file()
    (project / "data/broken_calib.parquet").write_bytes(b"not parquet")
    _fails_with(project, "tensorize", "data.calibration_inputs=data/broken_calib.parquet")
    # Neither the earlier run's tensors and report nor a half-written folder survive the failure.
    assert not (project / "reports/tensorize.json").exists()
    assert not (project / "build/tensors").exists()
    assert not list((project / "build").glob(".*partial"))
    run(["python", "stages/tensorize.py"], project)


def _check(project, stage: str, name: str, subject: str) -> dict:
    report = json.loads((project / f"reports/{stage}.json").read_text())
    return next(c for c in report["checks"] if c["name"] == name and c["subject"] == subject)
