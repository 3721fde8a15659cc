"""Forward hooks on every module: what each one outputs, in execution order.

Modules are named as `model.named_modules()` names them (`encoder.layer.1.attention`, the model
itself ""), so a name in a report is a path the user can look up. Hooks record on completion,
so children come before their parents and "execution order" is the order outputs are produced.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

FP16_FLUSH = 2.0 ** -25  # the largest |x| that rounds to zero in FP16


def floating_tensors(value: Any) -> Iterator[torch.Tensor]:
    """The floating-point tensors in whatever a module returned (tensor, tuples, dicts, ModelOutput)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from floating_tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from floating_tensors(item)


@dataclass
class RangeStats:
    """Largest and smallest non-zero |value| seen, and how many non-zero values FP16 turns into 0.

    Infinities are left out of the range (FP16 holds them as they are); finite values beyond FP16's
    max are exactly what overflows.
    """

    max_abs: float = 0.0
    min_abs_nonzero: float = math.inf
    nonzero: int = 0
    flushed: int = 0

    def add(self, tensor: torch.Tensor) -> None:
        values = tensor.detach().abs()
        values = torch.where(torch.isfinite(values), values, 0)
        nonzero = values > 0
        # Round to nearest even: |x| <= 2^-25 (half FP16's smallest subnormal) becomes 0 in FP16.
        flushed = nonzero & (values <= FP16_FLUSH)
        figures = torch.stack([values.max().float(), torch.where(nonzero, values, math.inf).min().float(),
                               nonzero.sum().float(), flushed.sum().float()]) if values.numel() else None
        if figures is None or not figures[2]:
            return
        top, bottom, count, gone = figures.tolist()
        self.max_abs = max(self.max_abs, top)
        self.min_abs_nonzero = min(self.min_abs_nonzero, bottom)
        self.nonzero += int(count)
        self.flushed += int(gone)

    @property
    def flush_share(self) -> float:
        return self.flushed / self.nonzero if self.nonzero else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "min_abs_nonzero": self.min_abs_nonzero if self.nonzero else None,
                "flush_share": self.flush_share}


def tensor_ranges(named: Iterator[tuple[str, torch.Tensor]]) -> dict[str, RangeStats]:
    """RangeStats of each floating parameter or buffer."""
    ranges = {}
    for name, tensor in named:
        if tensor.is_floating_point():
            ranges[name] = RangeStats()
            ranges[name].add(tensor)
    return ranges


OnOutput = Callable[[str, int, list[torch.Tensor]], None]  # module name, its call number, floating outputs


class ModuleHooks:
    """A forward hook on every module of `model` while the block runs, removed afterwards;
    `on_output` sees each module's floating outputs as it finishes, with its call number.
    Set `active` to False to run the model meanwhile without reporting."""

    def __init__(self, model: torch.nn.Module, on_output: OnOutput):
        self.model, self.on_output = model, on_output
        self.names = {id(m): name for name, m in model.named_modules()}
        self.calls: dict[str, int] = {}
        self.active = True
        self._handles: list[Any] = []

    def __enter__(self) -> "ModuleHooks":
        for module in self.model.modules():
            if isinstance(module, torch.jit.ScriptModule):  # refuses Python hooks; its outputs reach its parent
                continue
            self._handles.append(module.register_forward_hook(self._finish))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _finish(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not self.active:
            return
        name = self.names[id(module)]
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        self.on_output(name, call, list(floating_tensors(output)))


def shown(name: str, types: Mapping[str, str]) -> str:
    """A module as messages name it: its path, or the model's own forward for the root."""
    kind = types.get(name, "")
    return f"{name!r} ({kind})" if name else f"the model's own forward ({kind})"
