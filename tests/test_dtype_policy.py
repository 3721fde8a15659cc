"""The dtype policy (ml_atlas_sdk.dtypes): declared input_dtypes are what the ONNX graph and
val_inputs.pt hold; casts happen only when exact, else one line names file, column, row, value."""
from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import make_project_copy, run
from ml_atlas_sdk import AtlasArtifactBundle, push_to_mlflow
from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.checks.data_checks import df_shape_dtype
from ml_atlas_sdk.checks.onnx_checks import onnx_cross_check
from ml_atlas_sdk.dtypes import cast_exact
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.steps.tensorize import tensorize
from ml_atlas_sdk.tensors import frame_to_table, read_table, table_to_tensors, write_frame
from sdk_helpers import demo_frame, demo_metadata, demo_model

WHERE = "data/x.parquet: column 'ids'"


@pytest.mark.parametrize("values, declared, want", [
    (np.array([-2**24, 0, 2**24], dtype=np.int32), "float32", np.float32),    # ints within +-2^24
    (np.array([0, 17, 255], dtype=np.uint8), "float32", np.float32),          # image pixels
    (np.array([-2**31, 2**31 - 1], dtype=np.int64), "int32", np.int32),       # int64 values that fit
    (np.array([-128, 127], dtype=np.int8), "int64", np.int64),                # narrower to wider
    (np.array([1.0, -3.0, 2.0**31 - 1], dtype=np.float64), "int32", np.int32),  # whole floats
    (np.array([0.0, 1.0, 1.0], dtype=np.float32), "bool", np.bool_),
    (np.array([0, 1], dtype=np.int64), "bool", np.bool_),
    (np.array([True, False]), "float32", np.float32),
    (np.array([True, False]), "int32", np.int32),
    (np.array([1.5, -2.25], dtype=np.float32), "float64", np.float64),
    (np.array([-60000.0, 60000.0]), "float16", np.float16),
    (np.array([1, 2], dtype=np.int32), None, np.int64),                       # defaults
    (np.array([1, 2], dtype=np.uint32), None, np.int64),
    (np.array([1.5, 2.5], dtype=np.float16), None, np.float32),
    (np.array([True, False]), None, np.bool_),
])
def test_exact_casts_keep_every_value(values, declared, want):
    out = cast_exact(values, declared, WHERE)
    assert out.dtype == want
    np.testing.assert_array_equal(out.astype(np.float64), values.astype(np.float64))


def test_float64_to_float32_rounds_and_keeps_nan_and_inf():
    # The issue counts float64 -> float32 as exact although it rounds; NaN/Inf are nan_inf's business.
    values = np.array([0.1, np.nan, np.inf, -np.inf, -3.4e38])
    out = cast_exact(values, "float32", WHERE)
    assert out.dtype == np.float32 and out[0] == np.float32(0.1) and np.isnan(out[1])
    assert out[2] == np.inf and out[3] == -np.inf and np.isfinite(out[4])


def test_refusal_names_the_row_of_a_multi_element_cell():
    values = np.zeros((20, 3))
    values[17, 2] = 3.5
    values[18, 0] = 4.5
    with pytest.raises(AtlasInputError) as err:
        cast_exact(values, "int64", WHERE)
    assert str(err.value) == (
        "data/x.parquet: column 'ids' row 17: value 3.5 cannot be cast exactly to int64 (metadata.input_dtypes)")


@pytest.mark.parametrize("values, declared, shown", [
    (np.array([1.0, np.nan]), "int32", "value nan"),
    (np.array([1.0, np.inf]), "int64", "value inf"),
    (np.array([0.0, 2.0**63]), "int64", "value 9.223372036854776e+18"),
    (np.array([0, 2**31], dtype=np.int64), "int32", "value 2147483648"),
    (np.array([0, -2**31 - 1], dtype=np.int64), "int32", "value -2147483649"),
    (np.array([0, 2**24 + 1], dtype=np.int64), "float32", "value 16777217"),
    (np.array([0, -2**24 - 1], dtype=np.int32), "float32", "value -16777217"),
    (np.array([0.0, 3.5e38 * 10]), "float32", "value 3.5e+39"),
    (np.array([0.0, 70000.0], dtype=np.float32), "float16", "value 70000.0"),
    (np.array([1, 2]), "bool", "value 2"),
    (np.array([1.0, 0.5]), "bool", "value 0.5"),
])
def test_inexact_casts_are_refused_naming_row_and_value(values, declared, shown):
    with pytest.raises(AtlasInputError) as err:
        cast_exact(values, declared, WHERE)
    assert str(err.value) == f"{WHERE} row 1: {shown} cannot be cast exactly to {declared} (metadata.input_dtypes)"


@pytest.mark.parametrize("values, shown, target", [
    (np.array([0.0, 1e39]), "value 1e+39", "float32"),
    (np.array([0, 2**63], dtype=np.uint64), "value 9223372036854775808", "int64"),
])
def test_defaults_refuse_what_they_cannot_hold(values, shown, target):
    # Without input_dtypes the same exactness applies, and the line says which default it was.
    with pytest.raises(AtlasInputError) as err:
        cast_exact(values, None, WHERE)
    kind = "float" if values.dtype.kind == "f" else "int"
    assert str(err.value) == (f"{WHERE} row 1: {shown} cannot be cast exactly to {target} "
                              f"({kind} columns become {target} unless metadata.input_dtypes says otherwise)")


def _layouts(values: np.ndarray) -> dict[str, pa.Array]:
    """The same (rows, 2, 2) values in every cell layout a Parquet column may use."""
    t = pa.from_numpy_dtype(values.dtype)
    nested = [[list(r) for r in cell] for cell in values]
    return {
        "tensor": pa.FixedShapeTensorArray.from_numpy_ndarray(values),
        "fixed": pa.array(nested, type=pa.list_(pa.list_(t, 2), 2)),
        "nested": pa.array(nested, type=pa.list_(pa.list_(t))),
        "large": pa.array(nested, type=pa.large_list(pa.large_list(t))),
        "scalar": pa.array(values[:, 0, 0]),
    }


def _read(table: pa.Table, tmp_path, dtypes, row_group_size=3):
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=row_group_size)
    return table_to_tensors(read_table(tmp_path / "x.parquet", "data.val_inputs"), table.column_names, "data/x.parquet", dtypes)


def test_int32_declared_float32_in_every_layout(tmp_path):
    values = (np.arange(10 * 4).reshape(10, 2, 2) * 1000 - 7).astype(np.int32)
    layouts = _layouts(values)
    out = _read(pa.table(layouts), tmp_path, {n: "float32" for n in layouts})
    for name, tensor in out.items():
        assert tensor.dtype == np.float32, name
        want = values[:, 0, 0] if name == "scalar" else values
        np.testing.assert_array_equal(tensor, want.astype(np.float32), err_msg=name)


@pytest.mark.parametrize("layout", ["tensor", "fixed", "nested", "large", "scalar"])
def test_fraction_refused_with_the_files_row_across_row_groups(tmp_path, layout):
    values = np.ones((10, 2, 2))
    values[7, 0, 0] = 3.5  # row 7 lives in the third row group of 3 rows
    table = pa.table({"ids": _layouts(values)[layout]})
    with pytest.raises(AtlasInputError) as err:
        _read(table, tmp_path, {"ids": "int64"})
    assert str(err.value) == (
        "data/x.parquet: column 'ids' row 7: value 3.5 cannot be cast exactly to int64 (metadata.input_dtypes)")


def test_bool_cells_stay_bool_and_write_frame_accepts_bool_arrays(tmp_path):
    # Arrow tensors cannot hold bools; write_frame used to fail on 2-D bool cells.
    masks = np.arange(3 * 2 * 2).reshape(3, 2, 2) % 3 == 0
    write_frame(pd.DataFrame({"mask": list(masks), "flag": [True, False, True]}), tmp_path / "b.parquet")
    out = table_to_tensors(read_table(tmp_path / "b.parquet", "x"), ["mask", "flag"], "b.parquet")
    assert out["mask"].dtype == np.bool_ and out["mask"].tolist() == masks.tolist()
    assert out["flag"].tolist() == [True, False, True]
    as_float = table_to_tensors(read_table(tmp_path / "b.parquet", "x"), ["mask"], "b.parquet", {"mask": "float32"})
    np.testing.assert_array_equal(as_float["mask"], masks.astype(np.float32))


def test_write_frame_keeps_the_frames_dtypes_for_the_policy(tmp_path):
    # The policy is applied once, at tensorize; writing must not round a float64 or widen an int32.
    df = pd.DataFrame({"ids": [np.arange(3, dtype=np.int32)] * 2, "x": [1e39, 2.0]})
    table = frame_to_table(df)
    assert table.schema.field("ids").type.value_type == pa.int32()
    assert table.schema.field("x").type == pa.float64()
    with pytest.raises(AtlasInputError, match=r"^val_inputs_df: column 'x' row 0: value 1e\+39 cannot be cast exactly to float32"):
        table_to_tensors(table, ["x"], "val_inputs_df")


def test_tensorize_declares_inputs_and_calibration_but_not_outputs():
    meta = demo_metadata().model_copy(update={"input_dtypes": {"tokens": "int32", "dense": "float32"}})
    inputs = demo_frame("val_inputs").head(8)
    inputs["dense"] = [np.round(c * 4).astype(np.int64) for c in inputs["dense"]]
    outputs = pd.DataFrame({"ctr": [np.zeros(1, dtype=np.float64)] * 8, "logits": [np.arange(3, dtype=np.int32)] * 8})
    tables = {stem: (frame_to_table(df), f"{stem}_df") for stem, df in
              {"val_inputs": inputs, "calibration_inputs": inputs, "val_outputs_user": outputs}.items()}
    result = tensorize(tables, meta, SkipPolicy([]), 1)
    for stem in ("val_inputs", "calibration_inputs"):
        assert {n: t.dtype for n, t in result.tensors[stem].items()} == {"tokens": np.int32, "dense": np.float32}
    assert {n: t.dtype for n, t in result.tensors["val_outputs_user"].items()} == {"ctr": np.float32, "logits": np.int64}
    assert {c.name: c.verdict.value for c in result.report.checks}["df_shape_dtype"] == "passed"


def test_df_shape_dtype_wants_the_declared_dtype_exactly():
    tensors = {"a": torch.zeros(2, 3, dtype=torch.int64), "b": torch.zeros(2, dtype=torch.float64)}
    finding = df_shape_dtype(tensors, {"a": [-1, 3], "b": [-1]}, {"a": "int32"}, "val_inputs")
    assert not finding.ok
    assert "column 'a': dtype int64 but metadata input_dtypes says int32" in finding.message
    assert "column 'b': dtype float64, expected one of ['float32', 'int64', 'bool']" in finding.message


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """One SDK push of the demo model fed int32 columns: dense declared float32, tokens int32."""
    root = tmp_path_factory.mktemp("dtype_push")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    frame = demo_frame("val_inputs").head(128)
    frame["dense"] = [np.round(c * 8).astype(np.int32) for c in frame["dense"]]
    frame["tokens"] = [c.astype(np.int32) for c in frame["tokens"]]
    meta = demo_metadata().model_copy(update={"input_dtypes": {"tokens": "int32", "dense": "float32"}})
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=meta, val_inputs_df=frame, architecture_doc=None)
    run_id = push_to_mlflow(bundle, None, tracking_uri=uri, experiment="dtypes", work_dir=root / "work")
    client = MlflowClient(uri)
    atlas = root / "download"
    atlas.mkdir()
    client.download_artifacts(run_id, "atlas", str(atlas))
    return {"client": client, "uri": uri, "run_id": run_id, "atlas": atlas / "atlas", "frame": frame, "meta": meta}


def test_int32_declared_float32_is_pushed_as_float32(pushed):
    run = pushed["client"].get_run(pushed["run_id"])
    assert run.data.tags["atlas.bundle_complete"] == "true"
    assert run.data.tags["atlas.check.onnx_cross_check"] == "passed"
    assert run.data.tags["atlas.check.roundtrip"] == "passed"
    val_inputs = torch.load(pushed["atlas"] / "val_inputs.pt", weights_only=True)
    assert val_inputs["dense"].dtype == torch.float32
    np.testing.assert_array_equal(val_inputs["dense"].numpy(), np.stack(pushed["frame"]["dense"]).astype(np.float32))
    # Declared int32 is what the graph receives and what val_inputs.pt holds, both.
    assert val_inputs["tokens"].dtype == torch.int32
    graph = onnx.load(str(pushed["atlas"] / "model.onnx"))
    elem = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in graph.graph.input}
    assert elem == {"tokens": "int32", "dense": "float32"}


def test_consumer_accepts_the_declared_dtype_and_refuses_a_graph_that_disagrees(pushed, tmp_path):
    from ml_atlas_sdk.consumer import check_bundle_dir, verify

    assert verify(pushed["run_id"], pushed["uri"]) == []
    # val_inputs.pt widened to int64 behind the metadata's back: the schema re-check names it.
    import shutil

    from ml_atlas_sdk.bundle import MANIFEST, build_manifest, write_json

    copy = tmp_path / "atlas"
    shutil.copytree(pushed["atlas"], copy)
    inputs = torch.load(copy / "val_inputs.pt", weights_only=True)
    torch.save({**inputs, "tokens": inputs["tokens"].long()}, copy / "val_inputs.pt")
    write_json(copy / MANIFEST, build_manifest(copy).to_dict())
    assert check_bundle_dir(copy) == ["val_inputs.pt: column 'tokens': dtype int64 but metadata input_dtypes says int32"]


def test_onnx_cross_check_compares_graph_dtypes_with_val_inputs(pushed):
    onnx_path = pushed["atlas"] / "model.onnx"
    val_inputs = torch.load(pushed["atlas"] / "val_inputs.pt", weights_only=True)
    assert onnx_cross_check(onnx_path, pushed["meta"], 17, val_inputs).ok
    widened = {**val_inputs, "tokens": val_inputs["tokens"].long()}
    finding = onnx_cross_check(onnx_path, pushed["meta"], 17, widened)
    assert not finding.ok and finding.message == "graph input 'tokens' takes int32 but val_inputs.pt holds int64"
    assert finding.details["input_dtypes"] == {"tokens": "int32", "dense": "float32"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project_copy(tmp_path_factory.mktemp("dtype_stage") / "project")


def test_pipeline_door_casts_int32_to_declared_float32(project):
    frame = pd.read_parquet(project / "data/demo/val_inputs.parquet").head(64)
    frame["dense"] = [np.round(np.asarray(c) * 8).astype(np.int32) for c in frame["dense"]]
    write_frame(frame, project / "data/int_dense.parquet")
    run(["python", "stages/tensorize.py", "data.val_inputs=data/int_dense.parquet", "data.val_outputs=null",
         "data.calibration_inputs=null"], project)
    val_inputs = torch.load(project / "build/tensors/val_inputs.pt", weights_only=True)
    assert val_inputs["dense"].dtype == torch.float32 and val_inputs["tokens"].dtype == torch.int64
    np.testing.assert_array_equal(val_inputs["dense"].numpy(), np.stack(frame["dense"]).astype(np.float32))


def test_pipeline_door_refuses_a_fraction_in_one_line(project):
    frame = pd.read_parquet(project / "data/demo/val_inputs.parquet").head(64)
    tokens = np.stack(frame["tokens"]).astype(np.float64)
    tokens[41, 3] += 0.5
    frame["tokens"] = list(tokens)
    write_frame(frame, project / "data/frac.parquet")
    result = run(["python", "stages/tensorize.py", "data.val_inputs=data/frac.parquet"], project, check=False)
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: data/frac.parquet: column 'tokens' row 41: value {tokens[41, 3]} "
                     "cannot be cast exactly to int64 (metadata.input_dtypes)"]
