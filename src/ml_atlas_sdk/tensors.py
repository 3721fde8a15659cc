"""Parquet <-> `dict[name, Tensor]` through Arrow, with no per-row Python loop.

Cells may be Arrow `fixed_shape_tensor`, fixed-size lists, (nested) lists or scalars. Dtypes
follow `ml_atlas_sdk.dtypes` (declared `input_dtypes`, else floats float32 and ints int64), so the
bundle's tensors look the same whatever width the DataFrame happened to hold.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ml_atlas_sdk.dtypes import cast_exact
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.secrets import first_line


def read_table(path: str | Path, setting: str) -> pa.Table:
    """Read a Parquet file, refusing unreadable or empty ones with the setting that named it."""
    path = Path(path)
    if not path.is_file():
        raise AtlasInputError(f"{setting}: {path} does not exist")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise AtlasInputError(f"{setting}: {path} is not a readable Parquet file ({first_line(exc)})") from None
    if table.num_rows == 0:
        raise AtlasInputError(f"{setting}: {path} has zero rows")
    return table


def table_to_tensors(
    table: pa.Table, names: list[str], where: str, dtypes: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """One tensor per named column, first dim = rows; `where` names the file in errors and
    `dtypes` (metadata.input_dtypes) the declared dtype of some columns."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise AtlasInputError(
            f"{where}: missing column(s) {missing}; the file has {table.column_names}"
        )
    dtypes = dtypes or {}
    return {name: column_to_tensor(table.column(name), f"{where}: column {name!r}", dtypes.get(name))
            for name in names}


def column_to_tensor(column: pa.ChunkedArray, where: str, declared: str | None = None) -> torch.Tensor:
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    _refuse_nulls(array, where)
    if isinstance(array.type, pa.FixedShapeTensorType):
        values = array.to_numpy_ndarray()
    elif _is_list(array.type):
        values = _nested_lists_to_ndarray(array, where)
    else:
        values = _to_numpy(array, where)
    # One array for the whole column, so a refused cast names the file's row, not a row group's.
    return _owned_tensor(cast_exact(values, declared, where))


def _nested_lists_to_ndarray(array: pa.Array, where: str) -> np.ndarray:
    rows = len(array)
    dims: list[int] = []
    level = array
    while _is_list(level.type):
        _refuse_nulls(level, where, rows_per_element=math.prod(dims))
        if pa.types.is_fixed_size_list(level.type):
            size = level.type.list_size
        else:
            lengths = pc.list_value_length(level).to_numpy(zero_copy_only=False)
            size = int(lengths[0]) if lengths.size else 0  # every outer cell empty: nothing deeper
            ragged = np.flatnonzero(lengths != size)
            if ragged.size:
                elem = int(ragged[0])
                row = elem // max(1, math.prod(dims))
                raise AtlasInputError(
                    f"{where} row {row}: cell shape differs from row 0 "
                    f"(length {int(lengths[elem])} vs {size} at depth {len(dims) + 1}); "
                    "every row of a column must have the same shape"
                )
        dims.append(size)
        level = level.flatten()
    _refuse_nulls(level, where, rows_per_element=math.prod(dims))
    return _to_numpy(level, where).reshape(rows, *dims)


def _to_numpy(array: pa.Array, where: str) -> np.ndarray:
    t = array.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise AtlasInputError(f"{where}: cells of type {t} are not numeric")
    return array.to_numpy(zero_copy_only=False)


def _refuse_nulls(array: pa.Array, where: str, rows_per_element: int = 1) -> None:
    if array.null_count:
        first = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise AtlasInputError(f"{where} row {first // max(1, rows_per_element)}: null cell or element")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _owned_tensor(values: np.ndarray) -> torch.Tensor:
    if not values.flags.writeable:  # Arrow buffers are read-only; torch wants to own its memory
        values = values.copy()
    return torch.from_numpy(np.ascontiguousarray(values))


def write_frame(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame whose cells are ndarrays (or scalars) to Parquet the tensorize step reads.

    Columns whose cells share one shape become Arrow `fixed_shape_tensor` columns; scalar
    columns stay scalar. Ragged columns are refused: the bundle needs one shape per column.
    """
    path = Path(path)
    table = frame_to_table(df)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def frame_to_table(df: pd.DataFrame) -> pa.Table:
    """The Arrow table `write_frame` writes: what the SDK tensorizes in memory.

    Values keep their dtype: the tensorize step applies the one dtype policy to both doors.
    """
    if len(df) == 0:
        raise AtlasInputError("write_frame: the DataFrame has zero rows")
    arrays, fields = [], []
    for name in df.columns:
        where = f"write_frame: column {name!r}"
        cells = df[name].to_numpy()
        if len(cells) and isinstance(cells[0], (np.ndarray, list, tuple, torch.Tensor)):
            values = _stack_cells(cells, where)
        else:
            values = np.asarray(cells)
        if values.dtype.kind not in "fiub":
            raise AtlasInputError(f"{where}: dtype {values.dtype} is not numeric")
        if values.size == 0:  # Arrow has no fixed-shape cell without values
            raise AtlasInputError(f"{where}: cells of shape {values.shape[1:]} hold no values")
        arr = _cells_to_arrow(np.ascontiguousarray(values))
        arrays.append(arr)
        fields.append(pa.field(str(name), arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _cells_to_arrow(values: np.ndarray) -> pa.Array:
    if values.ndim == 1:
        return pa.array(values)
    if values.dtype != np.bool_:
        return pa.FixedShapeTensorArray.from_numpy_ndarray(values)
    # Arrow tensors cannot hold bools (they are bit-packed): nest fixed-size lists instead.
    arr = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return arr


def _stack_cells(cells: np.ndarray, where: str) -> np.ndarray:
    as_arrays = [_cell_array(c) for c in cells]
    first = as_arrays[0].shape
    for row, cell in enumerate(as_arrays):
        if cell.shape != first:
            raise AtlasInputError(f"{where} row {row}: cell shape {cell.shape} differs from row 0 {first}")
    return np.stack(as_arrays)


def _cell_array(cell) -> np.ndarray:
    """One cell as an n-d array. pandas reads nested Parquet lists back as object arrays of arrays
    (a frame from `pd.read_parquet` is what notebook users hand the SDK), so stack those too."""
    values = cell.numpy() if isinstance(cell, torch.Tensor) else np.asarray(cell)
    if values.dtype == object and values.size and isinstance(values.flat[0], (np.ndarray, list, tuple)):
        inner = [_cell_array(c) for c in values]
        if len({c.shape for c in inner}) == 1:  # ragged cells keep the object dtype and are refused as such
            return np.stack(inner)
    return values


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> Path:
    """torch.save a dict of CPU contiguous tensors atomically (a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # torch.save names the archive's root folder after the file stem, so the temp file keeps the
    # stem and lives in a sibling folder: the bytes are identical to a direct save at `path`.
    tmp_dir = path.parent / f".{path.name}.partial"
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / path.name
    torch.save(clean, tmp)
    tmp.replace(path)
    tmp_dir.rmdir()
    return path


def load_tensors(path: str | Path, setting: str = "tensors") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AtlasInputError(f"{setting}: {path} does not exist (did the earlier stage run?)")
    return torch.load(path, map_location="cpu", weights_only=True)


def slice_rows(tensors: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in tensors.items()}


def row_count(tensors: dict[str, torch.Tensor]) -> int:
    return next(iter(tensors.values())).shape[0]

