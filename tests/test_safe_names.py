"""Issue 25: names (inputs, outputs, model, dynamic axes) become ONNX value names, file names and
MLflow keys, so an unsafe one is refused up front by both doors in one line naming it and the rule;
and a duplicated column name is one line by both doors."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import make_project_copy, run
from ml_atlas_sdk import AtlasArtifactBundle, AtlasInputError, ModelMetadata, push_to_mlflow
from sdk_helpers import demo_frame, demo_metadata, demo_model

UNSAFE = ["../../../outside/x", "/etc/abs", "a\x00b", "a\nb", "", "..", "a/b", "x\\y"]
RULE = "is not a safe name (names become ONNX value names, file names and MLflow keys"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project_copy(tmp_path_factory.mktemp("names") / "project")


def _with_name(meta: dict, field: str, name: str) -> dict:
    """The demo metadata with one name replaced everywhere it appears (shapes, axes)."""
    meta = yaml.safe_load(yaml.safe_dump(meta))
    if field == "model_name":
        meta["model_name"] = name
    elif field == "axis":
        meta["dynamic_axes"]["tokens"][1] = name
    else:
        old = meta[field][0]
        meta[field][0] = name
        shapes = "input_shapes" if field == "input_names" else "output_shape"
        meta[shapes][name] = meta[shapes].pop(old)
        meta["dynamic_axes"][name] = meta["dynamic_axes"].pop(old)
    return meta


def _stage_line(project: Path, params: dict) -> str:
    # A params file of its own (Hydra's --config-name), so the unsafe name reaches the stage as YAML
    # holds it (NUL and newline included), not through the command line's grammar.
    (project / "bad_params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["python", "stages/tensorize.py", "--config-name", "bad_params"], project, check=False)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_output_name_is_refused_by_the_pipeline(project, name):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["metadata"] = _with_name(params["metadata"], "output_names", name)
    line = _stage_line(project, params)
    assert line.startswith("error: metadata.output_names") and repr(name) in line and RULE in line
    assert not (project / "build/tensors").exists()
    assert not list(project.parent.rglob("outside"))  # nothing escaped the project


@pytest.mark.parametrize("field", ["input_names", "model_name", "axis"])
def test_unsafe_input_model_and_axis_names_are_refused_by_the_pipeline(project, field):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["metadata"] = _with_name(params["metadata"], field, "../up")
    line = _stage_line(project, params)
    assert line.startswith("error: metadata") and "'../up'" in line and RULE in line


@pytest.mark.parametrize("name", UNSAFE)
@pytest.mark.parametrize("field", ["input_names", "output_names", "model_name", "axis"])
def test_unsafe_names_are_refused_by_the_sdk(field, name):
    raw = _with_name(demo_metadata().model_dump(mode="json"), field, name)
    with pytest.raises(AtlasInputError) as caught:
        ModelMetadata(**raw)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("ModelMetadata") and repr(name) in message and RULE in message


def test_safe_names_still_pass():
    raw = _with_name(demo_metadata().model_dump(mode="json"), "output_names", "click prob-v2.0")
    assert ModelMetadata(**raw).output_names[0] == "click prob-v2.0"


def test_duplicated_column_is_one_line_in_the_pipeline(project):
    table = pq.read_table(project / "data/demo/val_inputs.parquet")
    doubled = pa.Table.from_arrays([*table.columns, table.column("dense")], names=[*table.column_names, "dense"])
    pq.write_table(doubled, project / "data/doubled.parquet")
    result = run(["python", "stages/tensorize.py", "data.val_inputs=data/doubled.parquet"], project, check=False)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == ("error: data/doubled.parquet: column name(s) ['dense'] appear more than once; "
                        "each input needs exactly one column")
    assert not (project / "build/tensors").exists()  # nothing half-written for a later stage


def test_duplicated_column_is_one_line_in_the_sdk(tmp_path):
    frame = demo_frame("val_inputs")
    frame = frame.join(frame[["dense"]], rsuffix="_2").rename(columns={"dense_2": "dense"})
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=frame)
    with pytest.raises(AtlasInputError) as caught:
        push_to_mlflow(bundle, None, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert str(caught.value) == ("val_inputs_df: column name(s) ['dense'] appear more than once; "
                                 "each input needs exactly one column")
    assert not (tmp_path / "mlflow.db").exists()


def test_unsafe_names_in_a_metadata_dict_are_refused_by_the_bundle():
    raw = _with_name(demo_metadata().model_dump(mode="json", exclude={"torch_version"}), "output_names", "/etc/abs")
    with pytest.raises(AtlasInputError) as caught:
        AtlasArtifactBundle(model=demo_model(), metadata=raw, val_inputs_df=demo_frame("val_inputs"))
    assert str(caught.value).startswith("AtlasArtifactBundle.metadata.output_names: '/etc/abs' " + RULE)
