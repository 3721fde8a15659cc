"""ModelMetadata for a new model, read from forward's signature, the validation data and forward
passes: the data proposes a dynamic axis (rows padded to one length), the model confirms it (it
takes a shorter length), and the outputs whose axes follow are marked with the same name."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import torch

from ml_atlas_sdk.dtypes import dtype_name
from ml_atlas_sdk.metadata import MIN_OPSET, ModelMetadata
from ml_atlas_sdk.onboarding.inputs import InputPlan, padded_axes, plan_inputs
from ml_atlas_sdk.onboarding.outputs import OutputPlan, length_followers, plan_outputs

BATCH = "batch"


@dataclass
class Inferred:
    metadata: ModelMetadata
    inputs: InputPlan
    outputs: OutputPlan
    notes: list[str] = field(default_factory=list)  # what the user should review


def infer_metadata(model: torch.nn.Module, table: pa.Table, where: str, model_name: str, *,
                   output_names: list[str] | None = None, reference_columns: list[str] | None = None,
                   architecture: str | None = None, task_type: str | None = None) -> Inferred:
    """`model` in canonical form (eval, CPU, float32); `table` the validation inputs read from `where`."""
    inputs = plan_inputs(model, table, where)
    outputs = plan_outputs(model, inputs.tensors, inputs.names, output_names, reference_columns)
    axes = {n: {0: BATCH} for n in [*inputs.names, *outputs.names]}
    for name, extra in outputs.batch_axes.items():
        axes[name].update({a: f"{name}_{a}" for a in extra})
    notes = [*inputs.notes, *outputs.notes, *_sequence_axes(model, inputs, outputs, axes)]
    if architecture is None:
        architecture = type(model).__name__
        notes.append(f"architecture {architecture!r} is the model's class name (--architecture)")
    if task_type is None:
        notes.append("task_type is empty: say what the model does, e.g. classification (--task-type)")
    shapes = {n: list(t.shape) for n, t in inputs.tensors.items()} | outputs.shapes
    meta = ModelMetadata.from_config({
        "model_name": model_name, "input_names": inputs.names, "output_names": outputs.names,
        "input_shapes": {n: _marked(shapes[n], axes[n]) for n in inputs.names},
        "output_shape": {n: _marked(shapes[n], axes[n]) for n in outputs.names},
        "dynamic_axes": axes, "onnx_opset": MIN_OPSET, "architecture": architecture, "task_type": task_type or "",
        "input_dtypes": {n: dtype_name(t) for n, t in inputs.tensors.items()},
    }, where="inferred metadata")
    return Inferred(meta, inputs, outputs, notes)


def _sequence_axes(model: torch.nn.Module, inputs: InputPlan, outputs: OutputPlan,
                   axes: dict[str, dict[int, str]]) -> list[str]:
    """Mark input axes that vary between rows (and the output axes that follow them) in `axes`;
    return review notes. Input axes at one position with one length move together (a mask and its
    token ids), so each such group is tried as one."""
    tensors = inputs.tensors
    padded = {(axis, length) for t in tensors.values() for axis, length in padded_axes(t).items()}
    fixed = {(axis, t.shape[axis]) for t in tensors.values() for axis in range(1, t.dim())} - padded
    notes, dim_count = [], 0
    for axis, length in [*sorted(padded), *sorted(fixed)]:
        members = [(n, axis) for n in inputs.names if tensors[n].dim() > axis and tensors[n].shape[axis] == length]
        shown = ", ".join(f"{n}[{a}]" for n, a in members)
        followers = None if length < 2 else length_followers(
            model, tensors, inputs.names, outputs.names, outputs.shapes, (members, length - 1))
        if (axis, length) in padded and followers is None:
            notes.append(f"{shown}: rows look padded to length {length}, but forward refuses a shorter length, "
                         "so the axis stays fixed")
        elif (axis, length) in padded:
            dim_count += 1
            dim = "seq_len" if dim_count == 1 else f"seq_len_{dim_count}"
            for name, a in [*members, *((o, a) for o, out_axes in followers.items() for a in out_axes)]:
                axes[name].setdefault(a, dim)
            follow = ", ".join(f"{o}[{a}]" for o, out_axes in followers.items() for a in out_axes)
            notes.append(f"{shown}: rows are padded to length {length} with different real lengths: dynamic "
                         f"{dim!r}" + (f", followed by {follow}" if follow else "") + " (name guessed)")
        elif followers is not None:
            notes.append(f"{shown}: length {length} in every row, kept fixed; forward also takes length {length - 1}, "
                         "so it could be declared dynamic (-1 and a dynamic_axes name)")
    return notes


def _marked(shape: list[int], axes: dict[int, str]) -> list[int]:
    return [-1 if a in axes else d for a, d in enumerate(shape)]
