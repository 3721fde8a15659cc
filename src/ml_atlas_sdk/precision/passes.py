"""The two forward passes behind the FP16 checks, batch by batch in lockstep: the model in FP32 with
hooks recording every module's output range, and a half-precision copy (`.half()`, float inputs
cast, integer inputs kept) whose outputs are compared with the canonical ones.

Running them in lockstep keeps the cost at one FP32 and one FP16 pass: each batch's module outputs
from both runs are held only until the batch is done, and only when the batch's FP16 outputs depart
from the canonical ones are they compared, module by module in execution order, to find the first
module that departs.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from ml_atlas_sdk.compare import Tolerance, compare_arrays
from ml_atlas_sdk.models import canonical_model, forward_rows, outputs_by_name
from ml_atlas_sdk.precision.capture import ModuleHooks, RangeStats, shown, tensor_ranges
from ml_atlas_sdk.user_errors import describe, failing_module

Kept = dict[tuple[str, int], list[torch.Tensor]]  # (module, call number) -> its floating outputs


@dataclass
class Departure:
    """The first module, in execution order, whose FP16 output is out of tolerance of its FP32 one."""

    module: str
    order: int
    shown: str
    out_of_tol: int
    elements: int
    max_abs_err: float


@dataclass
class Passes:
    modules: dict[str, RangeStats] = field(default_factory=dict)  # execution order (first completion)
    types: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, RangeStats] = field(default_factory=dict)  # parameters and buffers
    half_outputs: dict[str, torch.Tensor] | None = None  # None when no FP16 pass ran to the end
    cannot_run_half: str | None = None
    first_departure: Departure | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def run_passes(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    canonical: dict[str, torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    batch_size: int,
    tol: Tolerance,
    with_half: bool,
) -> Passes:
    model = canonical_model(model)
    result = Passes(types={name: type(m).__name__ for name, m in model.named_modules()})
    result.tensors = tensor_ranges(p for group in (model.named_parameters(), model.named_buffers()) for p in group)
    half, result.cannot_run_half = _half_copy(model) if with_half else (None, None)
    kept32: Kept = {}
    kept16: Kept = {}

    def on_fp32(name: str, call: int, outputs: list[torch.Tensor]) -> None:
        stats = result.modules.setdefault(name, RangeStats())
        for tensor in outputs:
            stats.add(tensor)
        if half is not None:  # clones: a later in-place op (ReLU(inplace=True)) would change them
            kept32[(name, call)] = [t.detach().clone() for t in outputs]

    def on_fp16(name: str, call: int, outputs: list[torch.Tensor]) -> None:
        kept16[(name, call)] = [t.detach().float() for t in outputs]

    rows = next(iter(inputs.values())).shape[0]
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in output_names}
    fp32_seconds = fp16_seconds = 0.0
    with torch.no_grad(), ModuleHooks(model, on_fp32) as hooks32, \
            (ModuleHooks(half, on_fp16) if half is not None else contextlib.nullcontext()) as hooks16:
        for start in tqdm(range(0, rows, batch_size), desc="precision passes", unit="batch", leave=False):
            stop = min(start + batch_size, rows)
            batch = [inputs[n][start:stop] for n in input_names]
            hooks32.start_batch()
            kept32.clear()
            began = time.perf_counter()
            forward_rows(model, batch, input_names, output_names, range(start, stop))
            fp32_seconds += time.perf_counter() - began
            if half is None:
                continue
            hooks16.start_batch()
            kept16.clear()
            began = time.perf_counter()
            try:
                out16 = outputs_by_name(half(*[t.half() if t.is_floating_point() else t for t in batch]), output_names)
            except Exception as exc:  # an op without a Half kernel on CPU, or a dtype the model hard-codes
                where = failing_module(exc.__traceback__, half)
                result.cannot_run_half = (f"{shown(where or '', result.types)} cannot run in half precision on CPU: "
                                          f"{describe(exc)}")
                half, chunks = None, {}
                continue
            for n in output_names:
                chunks[n].append(out16[n].detach().float())
            if any(compare_arrays(out16[n], canonical[n][start:stop], tol)["out_of_tol"] for n in output_names):
                found = _first_departure(kept32, kept16, result, tol)
                if found and (result.first_departure is None or found.order < result.first_departure.order):
                    result.first_departure = found
            fp16_seconds += time.perf_counter() - began
    if half is not None:
        result.half_outputs = {n: torch.cat(chunks[n]) for n in output_names}
    result.seconds = {"fp32_hooks": fp32_seconds, "fp16": fp16_seconds}
    return result


def _half_copy(model: torch.nn.Module) -> tuple[torch.nn.Module | None, str | None]:
    """A half-precision copy; the user's model (the SDK door's in-memory one) stays as it was."""
    try:
        return copy.deepcopy(model).half(), None
    except Exception as exc:  # a module holding something deepcopy refuses (a lock, an open file)
        return None, f"the model cannot be copied for a half-precision run: {describe(exc)}"


def _first_departure(kept32: Kept, kept16: Kept, passes: Passes, tol: Tolerance) -> Departure | None:
    order = list(passes.modules)
    for (name, call), reference in kept32.items():  # insertion order = execution order
        actual = kept16.get((name, call))
        if actual is None or len(actual) != len(reference):
            continue
        metrics = [compare_arrays(a, r, tol) for a, r in zip(actual, reference)]
        out_of_tol = sum(m["out_of_tol"] for m in metrics)
        if out_of_tol:
            return Departure(name, order.index(name), shown(name, passes.types), out_of_tol,
                             sum(m["elements"] for m in metrics), max(m["max_abs_err"] for m in metrics))
    return None


def departure_dict(departure: Departure | None) -> dict[str, Any] | None:
    return None if departure is None else {
        "module": departure.module, "shown": departure.shown, "out_of_tol": departure.out_of_tol, "elements": departure.elements,
        "max_abs_err": departure.max_abs_err}
