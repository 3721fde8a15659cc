"""The notebook door infers metadata too (issue 23, item 5): `infer_metadata(model, val_inputs_df)`
returns the ModelMetadata `atlas-bundle init` writes for the same model and data, on every zoo model."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch
import yaml

from conftest import make_project_copy
from ml_atlas_sdk import AtlasInputError, ModelMetadata, infer_metadata
from ml_atlas_sdk.cli import main as cli
from zoo import models as zoo_models
from zoo.cases import CASES


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project_copy(tmp_path_factory.mktemp("infer") / "project")
    shutil.copy(zoo_models.__file__, project / "models" / "zoo_models.py")
    return project


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_infer_metadata_equals_what_init_writes(case, project, monkeypatch):
    name = f"inferred_{case.name}"
    folder = project / "data" / name
    data = case.write_data(folder)
    model = case.model()
    torch.save(model.state_dict(), folder / "weights.pt")
    args = ["init", name, "--factory", "zoo_models:build", "--kwargs", json.dumps({"family": case.family, **case.kwargs}),
            "--weights", f"data/{name}/weights.pt", "--val-inputs", f"data/{name}/val_inputs.parquet", "--no-switch"]
    if data["val_outputs"]:
        args += ["--val-outputs", f"data/{name}/val_outputs.parquet"]
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project / "models"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(args) == 0
    written = yaml.safe_load((project / "conf/metadata" / f"{name}.yaml").read_text())
    # What a notebook user holds: DataFrames of ndarray cells, the arrays the files were written from.
    inputs = case.inputs()
    outputs = case.frame(case.outputs(inputs)) if data["val_outputs"] else None
    proposed = infer_metadata(model, case.frame(inputs), name, val_outputs_df=outputs)
    assert proposed.metadata == ModelMetadata(**written)
    assert any("architecture" in note for note in proposed.review)  # the class name was a guess, listed for review


def test_a_frame_init_would_refuse_is_refused_in_one_line():
    case = CASES[0]
    frame = case.frame(case.inputs()).rename(columns={case.metadata["input_names"][0]: "not_a_parameter"})
    with pytest.raises(AtlasInputError, match="not_a_parameter") as refused:
        infer_metadata(case.model(), frame)
    assert "\n" not in str(refused.value)
