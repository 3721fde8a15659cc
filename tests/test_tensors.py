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
from ml_atlas_sdk.tensors import read_table, save_tensors, table_to_tensors, write_frame


def _roundtrip(table: pa.Table, tmp_path, names):
    pq.write_table(table, tmp_path / "t.parquet")
    return table_to_tensors(read_table(tmp_path / "t.parquet", "data.val_inputs"), names, "t.parquet")


def test_every_cell_layout_becomes_a_row_major_tensor(tmp_path):
    images = np.arange(4 * 2 * 3, dtype=np.float64).reshape(4, 2, 3)
    table = pa.table({
        "tensor": pa.FixedShapeTensorArray.from_numpy_ndarray(images.astype(np.float32)),
        "fixed": pa.array(list(images.reshape(4, 6)), type=pa.list_(pa.float64(), 6)),
        "nested": pa.array([[list(r) for r in img] for img in images.astype(np.int32)]),
        "scalar": pa.array([1, 2, 3, 4], type=pa.int32()),
    })
    out = _roundtrip(table, tmp_path, ["tensor", "fixed", "nested", "scalar"])
    assert out["tensor"].shape == (4, 2, 3) and out["tensor"].dtype == torch.float32
    assert out["fixed"].shape == (4, 6) and out["fixed"].dtype == torch.float32
    assert out["nested"].shape == (4, 2, 3) and out["nested"].dtype == torch.int64
    assert out["scalar"].tolist() == [1, 2, 3, 4] and out["scalar"].dtype == torch.int64
    np.testing.assert_array_equal(out["nested"].numpy(), images.astype(np.int64))
    np.testing.assert_array_equal(out["tensor"].numpy(), images.astype(np.float32))


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
    assert out["dense"].dtype == torch.float32 and out["dense"][2].tolist() == [2.0] * 4


def test_save_tensors_is_deterministic_and_weights_only_loadable(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.arange(3)}
    first = save_tensors(tensors, tmp_path / "one" / "val_inputs.pt")
    second = save_tensors(tensors, tmp_path / "two" / "val_inputs.pt")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    loaded = torch.load(first, weights_only=True)
    assert loaded["a"].is_contiguous() and torch.equal(loaded["a"], tensors["a"])
