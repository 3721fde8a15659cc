"""The precision step: fp16_range, fp16_roundtrip and int8_calibration_coverage, and the hints.

Cost: one FP32 pass with hooks and one FP16 pass over the validation rows, `batch_size` rows per
forward like the canonical outputs (precision/passes.py), none when both FP16 checks are skipped;
the report records their seconds.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from ml_atlas_sdk.checks import SkipPolicy, Verdict, run_check
from ml_atlas_sdk.compare import compare_arrays
from ml_atlas_sdk.dtypes import FP16_MAX
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import as_torch
from ml_atlas_sdk.precision.calibration import coverage
from ml_atlas_sdk.precision.capture import shown
from ml_atlas_sdk.precision.hints import HINTS, hinted_modules, owning_module
from ml_atlas_sdk.precision.passes import Passes, run_passes
from ml_atlas_sdk.reports import StageReport
from ml_atlas_sdk.settings import PrecisionSettings


def precision_step(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    canonical: dict[str, torch.Tensor],
    calibration: dict[str, torch.Tensor] | None,
    metadata: ModelMetadata,
    settings: PrecisionSettings,
    skip: SkipPolicy,
    batch_size: int,
) -> StageReport:
    """reports/precision.json: the three checks; `modules` (per-module figures in execution order),
    `tensors` (per parameter and buffer) and `precision_hints` beside them."""
    began = time.perf_counter()
    report = StageReport("precision")
    inputs, canonical, calibration = as_torch(inputs), as_torch(canonical), as_torch(calibration)
    tol = settings.fp16_tolerance
    with_half = "fp16_roundtrip" not in skip
    passes = Passes()
    if with_half or "fp16_range" not in skip:
        passes = run_passes(model, inputs, canonical, metadata.input_names, metadata.output_names,
                            batch_size, tol, with_half)
    names = {n: shown(n, passes.types) for n in passes.modules}
    modules = {n: s.to_dict() for n, s in passes.modules.items()}
    tensors = {n: s.to_dict() for n, s in passes.tensors.items()}
    ranges = report.add(run_check("fp16_range", modules, tensors, names, settings.fp16_margin,
                                  settings.fp16_underflow_share, skip=skip))
    per_output = ({n: compare_arrays(passes.half_outputs[n], canonical[n], tol) for n in metadata.output_names}
                  if passes.half_outputs is not None else {})
    half = report.add(run_check("fp16_roundtrip", per_output, tol, passes.first_departure,
                                passes.cannot_run_half, skip=skip))
    calib_began = time.perf_counter()
    figures = coverage(inputs, calibration, settings.calib_quantile) if calibration is not None else None
    report.add(run_check("int8_calibration_coverage", figures, settings.calib_max_outside_share,
                         settings.calib_max_quantile_gap, settings.calib_max_unseen_ids_share, skip=skip))
    calib_seconds = time.perf_counter() - calib_began

    hints = _hints(ranges.details if ranges.verdict is Verdict.WARNED else {},
                   (passes.first_departure or {}).get("module") if half.verdict is Verdict.WARNED else None,
                   list(passes.modules))
    report.metrics = {
        "fp16_max": FP16_MAX,
        "max_abs_activation": max((s["max_abs"] for s in modules.values()), default=0.0),
        "modules_over": len(ranges.details.get("over", {})),
        "modules_underflow": len(ranges.details.get("underflow", {})),
        "fp16_outputs": {n: {"max_abs_err": m["max_abs_err"], "out_of_tol": m["out_of_tol"]} for n, m in per_output.items()},
        "seconds": {**passes.seconds, "calibration": calib_seconds, "total": time.perf_counter() - began},
    }
    report.extra = {
        "modules": [{"module": n, "type": passes.types.get(n, ""), **s} for n, s in modules.items()],
        "tensors": [{"tensor": n, **s} for n, s in tensors.items()],
        HINTS: {"modules": hints} if hints else None,
    }
    return report


def _hints(range_details: dict[str, Any], first_departure: str | None, order: list[str]) -> list[str]:
    flagged = [*range_details.get("over", {}), *range_details.get("underflow", {}),
               *(owning_module(t) for t in (*range_details.get("tensors_over", {}),
                                            *range_details.get("tensors_underflow", {})))]
    if first_departure is not None:
        flagged.append(first_departure)
    return hinted_modules(flagged, order + list(dict.fromkeys(n for n in flagged if n not in order)))
