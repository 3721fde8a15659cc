"""PyTorch's side of a localization: what chosen modules returned on a few rows, caught by forward hooks."""
from __future__ import annotations

import inspect
import itertools
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from ml_atlas_sdk.models import canonical_model
from ml_atlas_sdk.user_errors import shown_path


@dataclass(frozen=True)
class ModuleCall:
    path: str  # named_modules() path, "" for the model itself
    order: int  # when its forward returned: children before their parent
    output: torch.Tensor | None  # a copy; None when the output is not one tensor
    input_ids: frozenset[int]  # id() of the tensors it was called with
    output_id: int | None
    called_at: str | None = None  # `file:line` of the model's code that called the module (call_site)


def module_calls(model: torch.nn.Module, args: Sequence[torch.Tensor], paths: Collection[str]) -> dict[str, ModuleCall]:
    """The call of each module named in `paths` on `args`, for modules called exactly once (a module
    called twice has two outputs and one ONNX scope per call, which cannot be told apart)."""
    model = canonical_model(model)
    calls: dict[str, list[ModuleCall]] = {}
    returned = itertools.count()
    alive: list[torch.Tensor] = []  # keeps the tensors whose id() we note from being freed and their ids reused

    def hook_for(path: str):
        def hook(module, inputs, output):
            tensor = _single_tensor(output)
            given = [t for t in inputs if isinstance(t, torch.Tensor)]
            alive.extend(given + ([tensor] if tensor is not None else []))
            # A copy: an in-place op further on (ReLU(inplace=True)) would otherwise rewrite it.
            calls.setdefault(path, []).append(ModuleCall(
                path, next(returned), tensor.detach().clone() if tensor is not None else None,
                frozenset(map(id, given)), id(tensor) if tensor is not None else None, call_site()))
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in model.named_modules() if name in paths]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return {path: made[0] for path, made in calls.items() if len(made) == 1}


def _single_tensor(output) -> torch.Tensor | None:
    if isinstance(output, (tuple, list)) and len(output) == 1:  # e.g. a transformers layer's (hidden,)
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


# Frames in these folders are the framework's, not the model's: torch's call machinery and ours.
_NOT_MODEL_CODE = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, sys.modules[__name__.split(".")[0]]))


def call_site() -> str | None:
    """`file:line` of the innermost frame on the stack outside torch and this package: inside a
    forward hook, the line of the model's own code that called the module (`x = self.fc(x)`)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_NOT_MODEL_CODE):
        frame = frame.f_back
    if frame is None:
        return None
    return f"{shown_path(frame.f_code.co_filename, within_sys_path=True)}:{frame.f_lineno}"


def module_source(module: torch.nn.Module, call: ModuleCall | None) -> str | None:
    """Where a module's computation is written: its class's forward, or for torch's own layers
    (nn.Linear, whose forward is torch/nn/modules/linear.py) the model's line that called it, as
    the dynamo exporter's node stacks name it."""
    if type(module).__module__.split(".")[0] == "torch" and call is not None and call.called_at:
        return call.called_at
    return forward_source(module)


def forward_source(module: torch.nn.Module) -> str | None:
    """`file:line` of the module class's forward, the file shown relative to the working directory
    or to the import path it came from; None where Python cannot find the source."""
    try:
        forward = inspect.unwrap(type(module).forward)
        file = inspect.getsourcefile(forward)
        line = inspect.getsourcelines(forward)[1]
    except (TypeError, OSError):
        return None
    return f"{shown_path(file, within_sys_path=True)}:{line}" if file else None

