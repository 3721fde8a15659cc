"""The two forward passes behind the FP16 checks, batch by batch: the model in FP32 with hooks
recording every module's output range, and a half-precision copy (`.half()`, float inputs cast,
integer inputs kept) whose outputs are compared with the canonical ones.

Nothing but range figures is kept from the passes. When a batch's FP16 outputs depart, its
departing rows (a few) are run once more through both models with every module's output held,
and compared module by module in execution order to name the first module that departs: the
extra cost is a few rows, and only for a model that warns.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from ml_atlas_sdk import mapped_pages
from ml_atlas_sdk.compare import Tolerance, compare_arrays, out_of_tolerance
from ml_atlas_sdk.models import canonical_model, forward_rows, outputs_by_name
from ml_atlas_sdk.precision.capture import ModuleHooks, RangeStats, shown, tensor_ranges
from ml_atlas_sdk.user_errors import describe, failing_module

LOCALISE_ROWS = 8  # departing rows re-run with every module's output held
Kept = dict[tuple[str, int], list[torch.Tensor]]  # (module, call number) -> its floating outputs


@dataclass
class Passes:
    modules: dict[str, RangeStats] = field(default_factory=dict)  # execution order (first completion)
    types: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, RangeStats] = field(default_factory=dict)  # parameters and buffers
    half_outputs: dict[str, torch.Tensor] | None = None  # None when no FP16 pass ran to the end
    cannot_run_half: str | None = None
    first_departure: dict[str, Any] | None = None
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

    def record(name: str, call: int, outputs: list[torch.Tensor]) -> None:
        stats = result.modules.setdefault(name, RangeStats())
        for tensor in outputs:
            stats.add(tensor)

    rows = next(iter(inputs.values())).shape[0]
    # Held once, filled batch by batch (canonical_outputs refused outputs without one entry per row).
    half_outputs: dict[str, torch.Tensor] = {}
    seconds = {"fp32_hooks": 0.0, "fp16": 0.0}
    with torch.no_grad(), ModuleHooks(model, record) as ranges:
        for start in tqdm(range(0, rows, batch_size), desc="precision passes", unit="batch", disable=None, leave=False):
            stop = min(start + batch_size, rows)
            batch = [inputs[n][start:stop] for n in input_names]
            try:
                began = time.perf_counter()
                forward_rows(model, batch, input_names, output_names, range(start, stop))
                seconds["fp32_hooks"] += time.perf_counter() - began
                if half is None:
                    continue
                began = time.perf_counter()
                out16, result.cannot_run_half = _half_forward(half, batch, output_names, result.types)
                if out16 is None:
                    half = None
                    continue
                for n in output_names:
                    value = out16[n].detach().float()
                    half_outputs.setdefault(n, value.new_empty((rows, *value.shape[1:])))[start:stop] = value
                if result.first_departure is None:
                    reference = {n: canonical[n][start:stop] for n in output_names}
                    departing = _departing_rows(out16, reference, tol)
                    mapped_pages.release(reference.values())
                    if departing.numel():
                        ranges.active = False  # these rows were recorded once already
                        found = _first_departure(model, half, [t[departing] for t in batch], result.types, tol)
                        result.first_departure = {**found, "rows": [start + int(i) for i in departing]}
                        ranges.active = True
                seconds["fp16"] += time.perf_counter() - began
            finally:  # the batch's pages of the mapped input file (mapped_pages)
                mapped_pages.release(batch)
    if half is not None:
        result.half_outputs = half_outputs
    result.seconds = seconds
    return result


def _as_half(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.half() if t.is_floating_point() else t for t in batch]


def _half_forward(half: torch.nn.Module, batch: list[torch.Tensor], output_names: Sequence[str],
                  types: dict[str, str]) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The half-precision copy's outputs on `batch`, or why it cannot run (naming the module)."""
    try:
        return outputs_by_name(half(*_as_half(batch)), output_names), None
    except Exception as exc:  # an op without a Half kernel on CPU, or a dtype the model hard-codes
        where = failing_module(exc.__traceback__, half) or ""
        return None, f"{shown(where, types)} cannot run in half precision on CPU: {describe(exc)}"


def _half_copy(model: torch.nn.Module) -> tuple[torch.nn.Module | None, str | None]:
    """A half-precision copy; the user's model (the SDK door's in-memory one) stays as it was."""
    try:
        return copy.deepcopy(model).half(), None
    except Exception as exc:  # a module holding something deepcopy refuses (a lock, an open file)
        return None, f"the model cannot be copied for a half-precision run: {describe(exc)}"


def _departing_rows(actual: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], tol: Tolerance) -> torch.Tensor:
    """Indices (within the batch) of the first LOCALISE_ROWS rows with an output out of tolerance."""
    bad = None
    for name, ref in reference.items():
        if actual[name].shape != ref.shape:
            continue
        per_row = torch.from_numpy(out_of_tolerance(actual[name], ref, tol).reshape(ref.shape[0], -1).any(axis=1))
        bad = per_row if bad is None else bad | per_row
    return torch.empty(0, dtype=torch.long) if bad is None else bad.nonzero().flatten()[:LOCALISE_ROWS]


def _first_departure(model: torch.nn.Module, half: torch.nn.Module, rows: list[torch.Tensor], types: dict[str, str],
                     tol: Tolerance) -> dict[str, Any]:
    """Both models on `rows` with every module's output held; the first module (in the FP32 run's
    execution order) whose FP16 output is out of tolerance of its FP32 one."""
    kept32: Kept = {}
    kept16: Kept = {}

    def hold(into: Kept):  # copies: a later in-place op (ReLU(inplace=True)) would change them
        return lambda name, call, outputs: into.__setitem__(
            (name, call), [t.detach().to(torch.float32, copy=True) for t in outputs])

    with ModuleHooks(model, hold(kept32)), ModuleHooks(half, hold(kept16)):
        model(*rows)
        half(*_as_half(rows))
    for (name, call), reference in kept32.items():  # insertion order = execution order
        actual = kept16.get((name, call))
        if actual is None or len(actual) != len(reference):
            continue
        metrics = [compare_arrays(a, r, tol) for a, r in zip(actual, reference)]
        out_of_tol = sum(m["out_of_tol"] for m in metrics)
        if out_of_tol:
            return {"module": name, "shown": shown(name, types), "out_of_tol": out_of_tol,
                    "elements": sum(m["elements"] for m in metrics),
                    "max_abs_err": max(m["max_abs_err"] for m in metrics)}
    return {"module": None, "shown": None}  # the outputs depart but no module's does on these rows alone
