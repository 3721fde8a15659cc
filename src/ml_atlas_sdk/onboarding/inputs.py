"""What `atlas-bundle init` reads about the inputs: names from forward's signature and the Parquet
columns, tensors through the same reader and dtype policy as the tensorize stage, and the axes the
data shows to vary between rows (padded sequences)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ml_atlas_sdk.dtypes import dtype_name
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.models import as_torch
from ml_atlas_sdk.tensors import table_to_tensors

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass
class InputPlan:
    names: list[str]  # in the order forward takes them (inputs are passed by position)
    tensors: dict[str, torch.Tensor]  # what tensorize will make of the file (declared = policy defaults)
    notes: list[str]  # what the user should review


def plan_inputs(model: torch.nn.Module, table: pa.Table, where: str) -> InputPlan:
    names, notes = input_names(model, table.column_names, where)
    for name in names:
        refuse_ragged(table.column(name), f"{where}: column {name!r}")
    tensors = table_to_tensors(table, names, where)
    for name in names:
        held = np.dtype(_leaf_type(table.schema.field(name).type).to_pandas_dtype()).name
        used = dtype_name(tensors[name])
        if held != used:
            notes.append(f"input {name!r}: the file holds {held}, the bundle {used} (the dtype policy's default); "
                         f"set input_dtypes.{name} if the graph should take another dtype")
    return InputPlan(names, as_torch(tensors), notes)


def input_names(model: torch.nn.Module, columns: list[str], where: str) -> tuple[list[str], list[str]]:
    """forward's positional parameters that have a column, in forward's order, and review notes."""
    owner = type(model).__name__
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # a forward written in C or wrapped opaquely
        return list(columns), [f"{owner}.forward's signature cannot be read: inputs follow the file's column order "
                               f"{list(columns)}"]
    shown = f"{owner}.forward({_signature(params)})"
    needs_keyword = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if needs_keyword:
        raise AtlasInputError(f"{shown} needs keyword-only argument(s) {needs_keyword} without defaults, which init "
                              "cannot feed (the bundle passes inputs by position): give them defaults or wrap the model")
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return list(columns), [f"{shown} takes *{_var_name(params)}: inputs follow the file's column order {list(columns)}"]
    positional = [p for p in params if p.kind in _POSITIONAL]
    by_name = {p.name for p in positional}
    required = [p.name for p in positional if p.default is p.empty]
    matched = [p.name for p in positional if p.name in columns]
    if not matched and len(columns) == 1 and len(required) <= 1 and positional:
        # One column, one tensor parameter: nothing to mix up, and the column name is the ONNX name.
        return list(columns), [f"column {columns[0]!r} feeds {shown}'s parameter {positional[0].name!r}; the ONNX "
                               f"input is named {columns[0]!r}"]
    unknown = [c for c in columns if c not in by_name]
    if unknown:
        raise AtlasInputError(f"{where}: column(s) {unknown} match no parameter of {shown}; name each column after "
                              "the parameter it feeds, or drop it")
    taken = positional[: max((positional.index(p) for p in positional if p.name in columns), default=-1) + 1]
    gaps = [p.name for p in taken if p.name not in columns]
    if gaps:
        raise AtlasInputError(f"{where}: {shown} takes {gaps} before {taken[-1].name!r} and inputs are passed by "
                              f"position: add column(s) {gaps} or drop {taken[-1].name!r}")
    missing = [n for n in required if n not in columns]
    if missing:
        raise AtlasInputError(f"{where}: no column for {shown}'s required parameter(s) {missing} "
                              f"(the file has {list(columns)})")
    return [p.name for p in taken], []


def refuse_ragged(column: pa.ChunkedArray, where: str) -> None:
    """Cells of different lengths cannot become one tensor; say which axis and how to fix it."""
    level = column.combine_chunks()
    rows, axis = len(level), 1
    while pa.types.is_list(level.type) or pa.types.is_large_list(level.type) or pa.types.is_fixed_size_list(level.type):
        if not pa.types.is_fixed_size_list(level.type):
            lengths = pc.list_value_length(level).to_numpy(zero_copy_only=False)
            differ = np.flatnonzero(lengths != lengths[0]) if lengths.size else []
            if len(differ):
                row = int(differ[0]) * rows // len(lengths)
                raise AtlasInputError(
                    f"{where}: cells differ in length along axis {axis} (row {row}: {int(lengths[differ[0]])}, "
                    f"row 0: {int(lengths[0])}); the bundle holds one tensor per input, so pad them to one length "
                    "(zeros, with an attention mask if the model takes one): init then marks that axis dynamic")
        level, axis = level.flatten(), axis + 1


def padded_axes(tensor: torch.Tensor) -> dict[int, int]:
    """{axis: length} of the axes beyond the batch along which rows end (or start) with a varying
    number of all-zero slices: a padded sequence, whose real length varies between rows."""
    found = {}
    used_all = tensor != 0
    for axis in range(1, tensor.dim()):
        length = tensor.shape[axis]
        used = used_all.movedim(axis, 1).reshape(tensor.shape[0], length, -1).any(dim=2)  # [rows, length]
        position = torch.arange(length)
        right = torch.where(used, position, -1).max(dim=1).values + 1  # length without trailing zeros
        left = length - torch.where(used, position, length).min(dim=1).values  # without leading zeros
        if any(int(n.min()) != int(n.max()) for n in (right, left)):
            found[axis] = length
    return found


def _leaf_type(t: pa.DataType) -> pa.DataType:
    while isinstance(t, pa.FixedShapeTensorType) or pa.types.is_nested(t):
        t = t.value_type
    return t


def _signature(params: list[inspect.Parameter]) -> str:
    """`x, mask=…, *, scale`: the parameters as the user wrote them, defaults elided."""
    shown, starred = [], False
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not starred:
            shown.append("*")
        starred = starred or p.kind in (p.VAR_POSITIONAL, p.KEYWORD_ONLY)
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        shown.append(prefix + p.name + ("=…" if p.default is not p.empty else ""))
    return ", ".join(shown)


def _var_name(params: list[inspect.Parameter]) -> str:
    return next(p.name for p in params if p.kind is p.VAR_POSITIONAL)
