"""What `atlas-bundle init` learns by running the model: the output structure and names, and which
axes follow the batch or a sequence length (forward on two row counts, and on a shortened length)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ml_atlas_sdk.dtypes import dtype_name
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.models import _structure as structure_of
from ml_atlas_sdk.user_errors import forward_failure

Trim = tuple[Sequence[tuple[str, int]], int]  # (input, axis) pairs cut to one length


@dataclass
class OutputPlan:
    names: list[str]
    shapes: dict[str, list[int]]  # on two rows; dynamic axes are marked by the caller
    batch_axes: dict[str, list[int]]  # axes beyond 0 that also follow the row count
    dtypes: dict[str, str]  # as the canonical outputs hold them (floats as float32)
    notes: list[str]


def run_rows(model: torch.nn.Module, inputs: dict[str, torch.Tensor], names: list[str], rows: int,
             trim: Trim | None = None) -> object:
    """forward on `rows` rows (repeating the file's rows if it has fewer), optionally with some axes
    cut to a shorter length; a failure without a trim is the user's forward failing (one line)."""
    available = next(iter(inputs.values())).shape[0]
    index = torch.arange(rows) % available
    batch = {n: inputs[n][index] for n in names}
    for name, axis in (trim[0] if trim else ()):
        batch[name] = batch[name].narrow(axis, 0, trim[1])
    args = [batch[n] for n in names]
    with torch.no_grad():
        try:
            return model(*args)
        except (Exception, SystemExit) as exc:  # the user's code (sys.exit too): named by rows and module, or a length it refuses
            if trim:
                return None
            raise forward_failure(exc, model, args, names, list(index.tolist()), "val_inputs") from None


def output_tensors(raw: object, owner: str) -> tuple[str, dict[str | int, torch.Tensor]]:
    """('tensor'|'sequence'|'dict', {key: tensor}); anything else has no ONNX output to map to."""
    if isinstance(raw, torch.Tensor):
        return "tensor", {0: raw}
    if isinstance(raw, (tuple, list)) and raw and all(isinstance(t, torch.Tensor) for t in raw):
        return "sequence", dict(enumerate(raw))
    if (isinstance(raw, Mapping) and raw and all(isinstance(k, str) for k in raw)
            and all(isinstance(t, torch.Tensor) for t in raw.values())):
        return "dict", dict(raw)
    raise AtlasInputError(f"model output: {owner}.forward returned {structure_of(raw)}, but each ONNX output is one "
                          "tensor: return a tensor, a flat tuple or list of tensors, or a dict of tensors by name")


def plan_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor], input_names: list[str],
                 given_names: list[str] | None, reference_columns: list[str] | None) -> OutputPlan:
    owner = type(model).__name__
    kind, two = output_tensors(run_rows(model, inputs, input_names, 2), owner)
    _, three = output_tensors(run_rows(model, inputs, input_names, 3), owner)
    names, notes = output_names(kind, list(two), given_names, reference_columns)
    shapes, batch_axes, dtypes = {}, {}, {}
    for key, name in zip(two, names):
        s2, s3 = list(two[key].shape), list(three[key].shape) if key in three else None
        if not s2 or s3 is None or len(s3) != len(s2) or s2[0] != 2 or s3[0] != 3:
            raise AtlasInputError(f"model output {name!r}: shape {s2} for 2 input rows and {s3} for 3; atlas needs the "
                                  "batch axis first in every output")
        shapes[name] = s2
        dtypes[name] = "float32" if two[key].is_floating_point() else dtype_name(two[key])
        batch_axes[name] = [a for a in range(1, len(s2)) if s2[a] != s3[a]]
        if batch_axes[name]:
            notes.append(f"output {name!r}: axes {batch_axes[name]} also change with the number of rows; marked dynamic")
    return OutputPlan(names, shapes, batch_axes, dtypes, notes)


def output_names(kind: str, keys: list, given: list[str] | None, reference: list[str] | None) -> tuple[list[str], list[str]]:
    """Names from a dict's keys, --output-names, or the reference outputs' columns; else guessed."""
    if kind == "dict":  # the keys are the names, and their order is the ONNX outputs' order
        for label, names in (("--output-names", given), ("data.val_outputs columns", reference)):
            if names is not None and sorted(names) != sorted(keys):
                raise AtlasInputError(f"{label} {names} differ from the keys forward returns {keys}")
        return list(keys), []
    for label, names in (("--output-names", given), ("data.val_outputs columns", reference)):
        if names is not None and len(names) != len(keys):
            raise AtlasInputError(f"{label} {names} name {len(names)} output(s) but forward returns {len(keys)} tensor(s)")
    if given is not None:
        if reference is not None and sorted(given) != sorted(reference):
            raise AtlasInputError(f"--output-names {given} differ from the data.val_outputs columns {reference}")
        return list(given), []
    if reference is not None:
        return list(reference), [f"output names {reference} are the val_outputs columns in the file's order: check that "
                                 "forward returns them in that order (or pass --output-names)"]
    guessed = ["output"] if kind == "tensor" else [f"output_{i}" for i in range(len(keys))]
    return guessed, [f"output names {guessed} are guessed: name them (--output-names) as serving expects"]


def length_followers(model: torch.nn.Module, inputs: dict[str, torch.Tensor], input_names: list[str],
                     output_names_: list[str], shapes: dict[str, list[int]], trim: Trim) -> dict[str, list[int]] | None:
    """Output axes whose size changes when the trimmed input axes are shortened; None if forward
    refuses the shorter length (then those input axes are not dynamic for this model)."""
    raw = run_rows(model, inputs, input_names, 2, trim)
    if raw is None:
        return None
    try:
        _, tensors = output_tensors(raw, type(model).__name__)
    except AtlasInputError:
        return None
    followers = {}
    for tensor, name in zip(tensors.values(), output_names_):
        shape = list(tensor.shape)
        if len(shape) != len(shapes[name]):
            return None
        followers[name] = [a for a in range(1, len(shape)) if shape[a] != shapes[name][a]]
    return followers
