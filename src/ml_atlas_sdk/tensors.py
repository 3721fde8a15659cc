"""Parquet <-> `dict[name, ndarray]` through Arrow, with no per-row Python loop and no torch.

Cells may be Arrow `fixed_shape_tensor`, fixed-size lists, (nested) lists or scalars. Dtypes
follow `ml_atlas_sdk.dtypes` (declared `input_dtypes`, else floats float32 and ints int64), so the
bundle's tensors look the same whatever width the DataFrame happened to hold. A file is read one
record batch at a time into one preallocated array per column, so the peak is the tensors plus a
batch, not the Arrow table, its conversion and its cast all at once.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_atlas_sdk import mapped_pages, ptfile
from ml_atlas_sdk.dtypes import cast_exact
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.secrets import first_line

if TYPE_CHECKING:
    import pandas as pd

BATCH_ROWS = 65_536  # at most this many rows per record batch read from a file...
BATCH_BYTES = 32 << 20  # ...and about this many bytes: a batch bounds the memory beside the tensors


def read_table(path: str | Path, setting: str) -> pa.Table:
    """Read a whole Parquet file, refusing unreadable or empty ones with the setting that named it."""
    source = open_table(path, setting)
    try:
        return source.read()
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise AtlasInputError(f"{setting}: {path} is not a readable Parquet file ({first_line(exc)})") from None


def open_table(path: str | Path, setting: str) -> pq.ParquetFile:
    """A Parquet file to read batch by batch (its footer read and checked, no data yet)."""
    path = Path(path)
    if not path.is_file():
        raise AtlasInputError(f"{setting}: {path} does not exist")
    try:
        # Pre-buffering reads whole column chunks ahead and, in pyarrow 25, keeps them for the
        # whole iteration: a 1 GB file then peaks at 3x its tensors. Unbuffered 1 MiB reads stay flat.
        source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise AtlasInputError(f"{setting}: {path} is not a readable Parquet file ({first_line(exc)})") from None
    if source.metadata.num_rows == 0:
        raise AtlasInputError(f"{setting}: {path} has zero rows")
    return source


def table_to_tensors(
    table: pa.Table | pq.ParquetFile, names: list[str], where: str, dtypes: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """One array per named column, first dim = rows; `where` names the file in errors and
    `dtypes` (metadata.input_dtypes) the declared dtype of some columns. Row numbers in errors
    count from the file's first row, whichever batch they fall in."""
    schema = table.schema_arrow if isinstance(table, pq.ParquetFile) else table.schema
    refuse_duplicate_columns(schema.names, where)
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise AtlasInputError(f"{where}: missing column(s) {missing}; the file has {schema.names}")
    dtypes = dtypes or {}
    rows = table.metadata.num_rows if isinstance(table, pq.ParquetFile) else table.num_rows
    out: dict[str, np.ndarray] = {}
    start = 0
    for batch in _batches(table, names, where):
        for name in names:
            column_where = f"{where}: column {name!r}"
            values = column_to_tensor(batch.column(name), column_where, dtypes.get(name), start)
            if name not in out:
                out[name] = np.empty((rows, *values.shape[1:]), values.dtype)
            elif values.shape[1:] != out[name].shape[1:]:
                raise AtlasInputError(f"{column_where} row {start}: cell shape differs from row 0 ({list(values.shape[1:])} "
                                      f"vs {list(out[name].shape[1:])}); every row of a column must have the same shape")
            out[name][start:start + len(values)] = values
        start += batch.num_rows
    return out


def refuse_duplicate_columns(columns: list, where: str) -> None:
    """Arrow and pandas allow one name on two columns; which one is the input would be a guess."""
    dupes = sorted({str(c) for c in columns if list(columns).count(c) > 1})
    if dupes:
        raise AtlasInputError(f"{where}: column name(s) {dupes} appear more than once; each input needs exactly one column")


def _batches(table: pa.Table | pq.ParquetFile, names: list[str], where: str) -> Iterator[pa.RecordBatch]:
    if isinstance(table, pa.Table):
        selected = table.select(names)
        yield from selected.to_batches(max_chunksize=_batch_rows(selected.nbytes, selected.num_rows))
        return
    groups = [table.metadata.row_group(i) for i in range(table.num_row_groups)]
    batch_rows = _batch_rows(sum(g.total_byte_size for g in groups), table.metadata.num_rows)
    batches = table.iter_batches(batch_size=batch_rows, columns=names)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # a corrupt page surfaces only when its batch is read
            raise AtlasInputError(f"{where}: not a readable Parquet file ({first_line(exc)})") from None
        yield batch


def _batch_rows(total_bytes: int, rows: int) -> int:
    row_bytes = total_bytes / max(1, rows)
    return max(1, min(BATCH_ROWS, int(BATCH_BYTES // max(1.0, row_bytes))))


def column_to_tensor(column: pa.Array | pa.ChunkedArray, where: str, declared: str | None = None,
                     first_row: int = 0) -> np.ndarray:
    """One column (or one batch of it) as an array; errors name rows from `first_row` on."""
    array = column if isinstance(column, pa.Array) else column.combine_chunks()
    _refuse_nulls(array, where, first_row)
    if isinstance(array.type, pa.FixedShapeTensorType):
        values = array.to_numpy_ndarray()
    elif _is_list(array.type):
        values = _nested_lists_to_ndarray(array, where, first_row)
    else:
        values = _to_numpy(array, where)
    return cast_exact(values, declared, where, first_row)


def _nested_lists_to_ndarray(array: pa.Array, where: str, first_row: int) -> np.ndarray:
    rows = len(array)
    dims: list[int] = []
    level = array
    while _is_list(level.type):
        _refuse_nulls(level, where, first_row, rows_per_element=math.prod(dims))
        if pa.types.is_fixed_size_list(level.type):
            size = level.type.list_size
        else:
            lengths = pc.list_value_length(level).to_numpy(zero_copy_only=False)
            size = int(lengths[0]) if lengths.size else 0  # every outer cell empty: nothing deeper
            ragged = np.flatnonzero(lengths != size)
            if ragged.size:
                elem = int(ragged[0])
                row = first_row + elem // max(1, math.prod(dims))
                raise AtlasInputError(
                    f"{where} row {row}: cell shape differs from row {first_row} "
                    f"(length {int(lengths[elem])} vs {size} at depth {len(dims) + 1}); "
                    "every row of a column must have the same shape"
                )
        dims.append(size)
        level = level.flatten()
    _refuse_nulls(level, where, first_row, rows_per_element=math.prod(dims))
    return _to_numpy(level, where).reshape(rows, *dims)


def _to_numpy(array: pa.Array, where: str) -> np.ndarray:
    t = array.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise AtlasInputError(f"{where}: cells of type {t} are not numeric")
    return array.to_numpy(zero_copy_only=False)


def _refuse_nulls(array: pa.Array, where: str, first_row: int, rows_per_element: int = 1) -> None:
    if array.null_count:
        first = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise AtlasInputError(f"{where} row {first_row + first // max(1, rows_per_element)}: null cell or element")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def write_frame(df: "pd.DataFrame", path: str | Path) -> Path:
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


def frame_to_table(df: "pd.DataFrame", where: str = "write_frame") -> pa.Table:
    """The Arrow table `write_frame` writes: what the SDK tensorizes in memory.

    Values keep their dtype: the tensorize step applies the one dtype policy to both doors.
    """
    if len(df) == 0:
        raise AtlasInputError(f"{where}: the DataFrame has zero rows")
    refuse_duplicate_columns(list(df.columns), where)
    arrays, fields = [], []
    for name in df.columns:
        column_where = f"{where}: column {name!r}"
        cells = df[name].to_numpy()
        if len(cells) and (isinstance(cells[0], (np.ndarray, list, tuple)) or hasattr(cells[0], "detach")):
            values = _stack_cells(cells, column_where)
        else:
            values = np.asarray(cells)
        if values.dtype.kind not in "fiub":
            raise AtlasInputError(f"{column_where}: dtype {values.dtype} is not numeric")
        if values.size == 0:  # Arrow has no fixed-shape cell without values
            raise AtlasInputError(f"{column_where}: cells of shape {values.shape[1:]} hold no values")
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
    values = cell.detach().cpu().numpy() if hasattr(cell, "detach") else np.asarray(cell)  # a torch.Tensor
    if values.dtype == object and values.size and isinstance(values.flat[0], (np.ndarray, list, tuple)):
        inner = [_cell_array(c) for c in values]
        if len({c.shape for c in inner}) == 1:  # ragged cells keep the object dtype and are refused as such
            return np.stack(inner)
    return values


def save_tensors(tensors, path: str | Path) -> Path:
    """Write arrays or CPU tensors in torch.save's format, atomically (a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The archive's root folder is named after the file stem, so the temp file keeps the stem and
    # lives in a sibling folder: the bytes are identical to a direct save at `path`.
    tmp_dir = path.parent / f".{path.name}.partial"
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / path.name
    ptfile.save(tensors, tmp)
    tmp.replace(path)
    tmp_dir.rmdir()
    return path


def load_tensors(path: str | Path, setting: str = "tensors", writable: bool = False) -> dict[str, np.ndarray]:
    """The arrays of a tensor file, mapped from disk (copy-on-write where `writable`: a model may
    be handed them as torch tensors, which want writable memory)."""
    path = Path(path)
    if not path.is_file():
        raise AtlasInputError(f"{setting}: {path} does not exist (did the earlier stage run?)")
    return ptfile.load(path, writable=writable)


def slice_rows(tensors: dict, index) -> dict:
    """The rows `index` (a slice: views; row numbers: copies, read from a mapped tensor file without
    leaving it resident) of every tensor."""
    if isinstance(index, slice):
        return {k: v[index] for k, v in tensors.items()}
    return {k: mapped_pages.take(v, index) for k, v in tensors.items()}


def row_count(tensors: dict) -> int:
    return next(iter(tensors.values())).shape[0]
