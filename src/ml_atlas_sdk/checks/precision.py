"""FP16 and INT8 readiness checks. They warn only: atlas chooses the precision, the user gets the
warning and the evidence (figures in details, per module in reports/precision.json)."""
from __future__ import annotations

from typing import Any

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding
from ml_atlas_sdk.compare import Tolerance, problem, worst
from ml_atlas_sdk.dtypes import FP16_MAX

_LISTED = 5  # names per message; details hold them all


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


@check("fp16_range")
def fp16_range(
    modules: dict[str, dict[str, Any]],
    tensors: dict[str, dict[str, Any]],
    shown: dict[str, str],
    margin: float,
    underflow_share: float,
) -> Finding:
    """No module output, parameter or buffer beyond FP16's max less `margin`, and none with more
    than `underflow_share` of its non-zero values turning into zero in FP16.

    `modules` and `tensors` map names to RangeStats.to_dict(), modules in execution order;
    `shown` names each module as messages should.
    """
    limit = FP16_MAX - margin
    over = {n: s["max_abs"] for n, s in modules.items() if s["max_abs"] > limit}
    flushed = {n: s["flush_share"] for n, s in modules.items() if s["flush_share"] > underflow_share}
    tensors_over = {n: s["max_abs"] for n, s in tensors.items() if s["max_abs"] > limit}
    tensors_flushed = {n: s["flush_share"] for n, s in tensors.items() if s["flush_share"] > underflow_share}
    peak = max(modules, key=lambda n: modules[n]["max_abs"], default=None)
    details = {"fp16_max": FP16_MAX, "warn_above": limit, "underflow_share": underflow_share,
               "max_abs": modules[peak]["max_abs"] if peak is not None else 0.0, "max_abs_module": peak,
               "over": over, "underflow": flushed, "tensors_over": tensors_over, "tensors_underflow": tensors_flushed}
    parts = []
    if over:
        parts.append(f"{len(over)} module(s) output values beyond FP16's max {FP16_MAX:g} or within {margin:g} of it: "
                     + _listing([f"{shown[n]} max |x| {v:.3g}" for n, v in over.items()]))
    if tensors_over:
        parts.append(f"{len(tensors_over)} parameter(s)/buffer(s) beyond {limit:g}: "
                     + _listing([f"{n!r} max |x| {v:.3g}" for n, v in tensors_over.items()]))
    if flushed:
        parts.append(f"{len(flushed)} module(s) output non-zero values that FP16 turns into 0 "
                     f"(over {underflow_share:.2%}): " + _listing([f"{shown[n]} {v:.1%}" for n, v in flushed.items()]))
    if tensors_flushed:
        parts.append(f"{len(tensors_flushed)} parameter(s)/buffer(s) with values that FP16 turns into 0: "
                     + _listing([f"{n!r} {v:.1%}" for n, v in tensors_flushed.items()]))
    if parts:
        return Finding(False, "; ".join(parts), details)
    where = f" in {shown[peak]}" if peak is not None else ""
    return Finding(True, f"{len(modules)} module(s) within FP16's range: max |activation| {details['max_abs']:.3g}{where} "
                         f"(warns above {limit:g})", details)


@check("fp16_roundtrip")
def fp16_roundtrip(
    per_output: dict[str, dict[str, Any]],
    tol: Tolerance,
    first_departure: dict[str, Any] | None,
    cannot_run: str | None = None,
) -> Finding:
    """The model in half precision on CPU against the canonical FP32 outputs; when it departs, the
    first module (in execution order) whose FP16 output departs from its FP32 one is named."""
    if cannot_run:
        return Finding(None, f"{cannot_run}; FP16 outputs not compared", {"reason": cannot_run})
    bad = [line for name, m in per_output.items() if (line := problem(name, m, "FP16", "FP32"))]
    details = {"rtol": tol.rtol, "atol": tol.atol, "outputs": per_output, "first_departure": first_departure,
               "problems": bad}
    if bad:
        first = (f"; first module departing from FP32: {first_departure['shown']}"
                 if first_departure and first_departure.get("shown") else "")
        return Finding(False, "; ".join(bad) + first, details)
    largest = worst([m["max_abs_err"] for m in per_output.values()])
    return Finding(True, f"{len(per_output)} output(s) within rtol={tol.rtol}, atol={tol.atol} in FP16 "
                         f"(max_abs_err {largest:.3g})", details)


@check("int8_calibration_coverage")
def int8_calibration_coverage(
    figures: dict[str, dict[str, Any]] | None,
    max_outside_share: float,
    max_quantile_gap: float,
    max_unseen_ids_share: float,
) -> Finding:
    """Per input (precision.calibration.coverage): few validation values outside the calibration
    range, a small quantile gap, few validation ids the calibration sample never holds."""
    if figures is None:
        return Finding(None, "no calibration_inputs given", {"reason": "no calibration_inputs"})
    details = {"inputs": figures, "max_outside_share": max_outside_share, "max_quantile_gap": max_quantile_gap,
               "max_unseen_ids_share": max_unseen_ids_share}
    bad = []
    for name, f in figures.items():
        if f["kind"] == "ids":
            if f["unseen_share"] > max_unseen_ids_share:
                bad.append(f"{name}: {f['unseen_share']:.1%} of validation values are ids never seen in calibration "
                           f"({f['unseen_ids']} of {f['distinct_ids']} distinct ids)")
        elif f["outside_share"] > max_outside_share or f["quantile_gap"] > max_quantile_gap:
            low, high = f["calibration_range"]
            bad.append(f"{name}: {f['outside_share']:.1%} of validation values outside the calibration range "
                       f"[{low:.3g}, {high:.3g}]; p{f['quantile'] * 100:g} |value| {f['validation_quantile_abs']:.3g} "
                       f"vs {f['calibration_quantile_abs']:.3g} in calibration (gap {f['quantile_gap']:.0%})")
    if bad:
        return Finding(False, "; ".join(bad), details)
    return Finding(True, f"calibration covers the validation data of {len(figures)} input(s)", details)
