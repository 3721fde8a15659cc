"""Parquet -> tensors through Arrow, for every cell layout the SPEC allows."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.tensors import open_table, read_table, save_tensors, table_to_tensors, write_frame


def _roundtrip(table: pa.Table, tmp_path, names, row_group_size=None):
    """The file read as the tensorize stage reads it: batch by batch into preallocated arrays."""
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=row_group_size)
    return table_to_tensors(open_table(tmp_path / "t.parquet", "data.val_inputs"), names, "t.parquet")


def test_every_cell_layout_becomes_a_row_major_tensor(tmp_path):
    images = np.arange(4 * 2 * 3, dtype=np.float64).reshape(4, 2, 3)
    table = pa.table({
        "tensor": pa.FixedShapeTensorArray.from_numpy_ndarray(images.astype(np.float32)),
        "fixed": pa.array(list(images.reshape(4, 6)), type=pa.list_(pa.float64(), 6)),
        "nested": pa.array([[list(r) for r in img] for img in images.astype(np.int32)]),
        "scalar": pa.array([1, 2, 3, 4], type=pa.int32()),
    })
    out = _roundtrip(table, tmp_path, ["tensor", "fixed", "nested", "scalar"])
    assert out["tensor"].shape == (4, 2, 3) and out["tensor"].dtype == np.float32
    assert out["fixed"].shape == (4, 6) and out["fixed"].dtype == np.float32
    assert out["nested"].shape == (4, 2, 3) and out["nested"].dtype == np.int64
    assert out["scalar"].tolist() == [1, 2, 3, 4] and out["scalar"].dtype == np.int64
    np.testing.assert_array_equal(out["nested"], images.astype(np.int64))
    np.testing.assert_array_equal(out["tensor"], images.astype(np.float32))


def _layouts(values: np.ndarray) -> dict[str, pa.Array]:
    """The same (rows, 2) values as each layout a Parquet column may use."""
    arrow_type = pa.from_numpy_dtype(values.dtype)
    return {
        "tensor": pa.FixedShapeTensorArray.from_numpy_ndarray(values),
        "fixed": pa.array(list(values), type=pa.list_(arrow_type, 2)),
        "nested": pa.array([list(r) for r in values], type=pa.list_(arrow_type)),
        "large": pa.array([list(r) for r in values], type=pa.large_list(arrow_type)),
        "scalar": pa.array(values[:, 0]),
    }


@pytest.mark.parametrize("np_dtype, expected", [
    (np.float16, np.float32), (np.float64, np.float32),
    (np.int8, np.int64), (np.int32, np.int64), (np.uint16, np.int64),
])
def test_floats_become_float32_and_ints_int64_in_every_layout(tmp_path, np_dtype, expected):
    # The bundle's tensors must not depend on how wide the user's DataFrame happened to be.
    values = (np.arange(6).reshape(3, 2) * 3).astype(np_dtype)
    layouts = _layouts(values)
    out = _roundtrip(pa.table(layouts), tmp_path, list(layouts))
    for name, tensor in out.items():
        assert tensor.dtype == expected, name
        want = values[:, 0] if name == "scalar" else values
        np.testing.assert_array_equal(tensor, want.astype(tensor.dtype), err_msg=name)


def test_ragged_row_is_counted_across_row_groups(tmp_path):
    # Parquet row groups arrive as separate chunks; the error must name the file's row, not the chunk's.
    table = pa.table({"x": pa.array([[1, 2]] * 5 + [[1]])})
    with pytest.raises(AtlasInputError, match=r"column 'x' row 5: cell shape differs"):
        _roundtrip(table, tmp_path, ["x"], row_group_size=2)


def test_all_empty_nested_cells_give_an_empty_tensor(tmp_path):
    table = pa.table({"x": pa.array([[], [], []], type=pa.list_(pa.list_(pa.float64())))})
    # The rank follows the Arrow type's nesting even when no cell has a deeper level to measure.
    out = _roundtrip(table, tmp_path, ["x"])["x"]
    assert out.shape == (3, 0, 0) and out.dtype == np.float32


def test_non_numeric_column_names_the_column(tmp_path):
    table = pa.table({"ok": pa.array([1, 2]), "label": pa.array(["a", "b"])})
    with pytest.raises(AtlasInputError, match=r"t.parquet: column 'label': cells of type string are not numeric"):
        _roundtrip(table, tmp_path, ["ok", "label"])


def test_ragged_nested_lists_name_column_and_row(tmp_path):
    table = pa.table({"x": pa.array([[[1, 2], [3, 4]], [[1, 2], [3, 4]], [[1, 2], [3]]])})
    with pytest.raises(AtlasInputError, match=r"column 'x' row 2: cell shape differs from row 0"):
        _roundtrip(table, tmp_path, ["x"])


def test_null_cells_name_the_row(tmp_path):
    table = pa.table({"x": pa.array([[1.0, 2.0], None, [3.0, 4.0]])})
    with pytest.raises(AtlasInputError, match=r"column 'x' row 1: null"):
        _roundtrip(table, tmp_path, ["x"])


def test_write_frame_round_trips_ndarray_cells(tmp_path):
    df = pd.DataFrame({"tokens": [np.arange(5) + i for i in range(3)], "dense": [np.full(4, i, dtype=np.float64) for i in range(3)]})
    write_frame(df, tmp_path / "f.parquet")
    schema = pq.read_schema(tmp_path / "f.parquet")
    assert isinstance(schema.field("tokens").type, pa.FixedShapeTensorType)
    out = table_to_tensors(read_table(tmp_path / "f.parquet", "x"), ["tokens", "dense"], "f.parquet")
    assert out["tokens"].tolist() == [list(range(i, i + 5)) for i in range(3)]
    assert out["dense"].dtype == np.float32 and out["dense"][2].tolist() == [2.0] * 4


def test_write_frame_refuses_ragged_cells_naming_column_and_row(tmp_path):
    df = pd.DataFrame({"ok": [np.zeros(3)] * 3, "tokens": [np.zeros(3), np.zeros(3), np.zeros(2)]})
    with pytest.raises(AtlasInputError, match=r"write_frame: column 'tokens' row 2: cell shape \(2,\) differs from row 0 \(3,\)"):
        write_frame(df, tmp_path / "f.parquet")
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_save_tensors_is_deterministic_and_weights_only_loadable(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.arange(3)}
    first = save_tensors(tensors, tmp_path / "one" / "val_inputs.pt")
    second = save_tensors(tensors, tmp_path / "two" / "val_inputs.pt")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    loaded = torch.load(first, weights_only=True)
    assert loaded.keys() == tensors.keys()
    assert loaded["a"].is_contiguous() and torch.equal(loaded["a"], tensors["a"])
    assert sorted(p.name for p in first.parent.iterdir()) == ["val_inputs.pt"]  # no .partial folder left


def test_write_frame_refuses_cells_without_values(tmp_path):
    # Arrow has no fixed-shape cell of size 0; say so instead of pyarrow's "non-empty ndarray".
    df = pd.DataFrame({"z": [np.zeros((0, 3), dtype=np.float32)] * 2})
    with pytest.raises(AtlasInputError, match=r"^write_frame: column 'z': cells of shape \(0, 3\) hold no values$"):
        write_frame(df, tmp_path / "f.parquet")


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(tio, "BATCH_ROWS", 4)  # 10 rows read as batches of 4, 4 and 2


@pytest.mark.parametrize("column, expected", [
    (pa.array([[1.0, 2.0]] * 6 + [None] + [[1.0, 2.0]] * 3), r"column 'x' row 6: null cell"),
    (pa.array([[1.0, 2.0]] * 6 + [[1.0, None]] + [[1.0, 2.0]] * 3), r"column 'x' row 6: null cell or element"),
    (pa.array([[1, 2]] * 9 + [[1]]), r"column 'x' row 9: cell shape differs from row 8"),
    (pa.array([[1, 2]] * 8 + [[1]] * 2), r"column 'x' row 8: cell shape differs from row 0 \(\[1\] vs \[2\]\)"),
    (pa.array([1.0] * 5 + [1.5] + [1.0] * 4), r"column 'x' row 5: value 1.5 cannot be cast exactly to int32"),
])
def test_errors_name_the_files_row_whichever_batch_it_is_in(tmp_path, small_batches, column, expected):
    pq.write_table(pa.table({"x": column}), tmp_path / "t.parquet")
    with pytest.raises(AtlasInputError, match=expected):
        table_to_tensors(open_table(tmp_path / "t.parquet", "data.val_inputs"), ["x"], "t.parquet", {"x": "int32"})


def test_batches_fill_one_array_per_column_in_row_order(tmp_path, small_batches):
    values = np.arange(10 * 3, dtype=np.float64).reshape(10, 3)
    table = pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(values), "n": pa.array(np.arange(10))})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=3)  # batches and row groups do not line up
    for source in (open_table(tmp_path / "t.parquet", "x"), read_table(tmp_path / "t.parquet", "x"), table):
        out = table_to_tensors(source, ["x", "n"], "t.parquet")
        np.testing.assert_array_equal(out["x"], values.astype(np.float32))
        assert out["n"].tolist() == list(range(10)) and out["x"].flags.c_contiguous


def test_a_corrupt_page_is_one_line_naming_the_file(tmp_path):
    pq.write_table(pa.table({"x": np.arange(100_000, dtype=np.float64)}), tmp_path / "t.parquet")
    data = bytearray((tmp_path / "t.parquet").read_bytes())
    data[200:60_000] = bytes(59_800)  # the footer survives, the data pages do not
    (tmp_path / "t.parquet").write_bytes(bytes(data))
    with pytest.raises(AtlasInputError, match=r"t.parquet: not a readable Parquet file"):
        table_to_tensors(open_table(tmp_path / "t.parquet", "data.val_inputs"), ["x"], "t.parquet")
