"""The one element-wise comparison behind every verdict that sets two outputs side by side:
the round-trip, the escalation ladder, the batch-size probe, drift and the consumer's ORT re-run.

`abs_err > atol + rtol*|ref|` is False when either side is NaN, so a plain tolerance test
passes NaN. Here an element agrees only when both sides are finite and within tolerance, or both
are the same infinity (an exact match, e.g. a -inf mask that reaches the output). NaN never
agrees, not even with NaN at the same place: it carries no value to compare, and with `nan_inf`
skipped, NaN inputs give NaN on both sides and would otherwise pass. Error statistics
(max/mean) are taken over the elements finite on both sides; `non_finite_mismatch` counts the
others beside them and `describe` names them, so no message reports a small error while NaN hides.

Beside the element-wise rule, a scale-aware one (`max_nrmse`, where set): the RMS error over the
reference's RMS spread across rows (each element's deviation from its position's mean over the
rows). An absolute tolerance passes an all-zero answer when the outputs are small; here a zeroed,
constant or frozen output (the same answer for every row) scores at least 1 whatever the
outputs' magnitude, while float noise scores ~1e-6. A spread below NOISE_SPREAD of the outputs'
own RMS counts as that floor: variation at float resolution is not something to be judged on.
"""
from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_atlas_sdk import mapped_pages

REL_ERR_FLOOR = 1e-6  # keeps max_rel_err finite where the reference is exactly zero
NOISE_SPREAD = 1e-3  # spread below this share of the reference's RMS is float noise (see above)
_KINDS = ("finite", "nan", "posinf", "neginf")
_SHOWN = {"finite": "finite", "nan": "NaN", "posinf": "+Inf", "neginf": "-Inf"}


@dataclass(frozen=True)
class Tolerance:
    """One output's comparison rule: element-wise rtol/atol, and the scale-aware max_nrmse (None: not applied)."""

    rtol: float
    atol: float
    max_nrmse: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"rtol": self.rtol, "atol": self.atol, "max_nrmse": self.max_nrmse}


def tolerance_of(tol: "Tolerance | Mapping[str, Tolerance]", name: str) -> Tolerance:
    """A per-output mapping's entry for `name`, or the one tolerance given for every output."""
    return tol if isinstance(tol, Tolerance) else tol[name]


@dataclass(frozen=True)
class Pairing:
    """Where two same-shaped arrays can be compared by value, and what disagrees beyond values."""

    finite: np.ndarray  # bool mask: both sides finite
    mismatch: np.ndarray  # bool mask: a non-finite value the other side does not match
    pairs: dict[str, int]  # "nan_vs_finite" -> count, only the non-zero kinds

    @property
    def count(self) -> int:
        return int(self.mismatch.sum())


def _kind(x: np.ndarray) -> np.ndarray:
    kind = np.zeros(x.shape, np.int8)
    kind[np.isnan(x)] = 1
    kind[np.isposinf(x)] = 2
    kind[np.isneginf(x)] = 3
    return kind


def pair(actual: np.ndarray, reference: np.ndarray) -> Pairing:
    ka, kr = _kind(actual), _kind(reference)
    finite = (ka == 0) & (kr == 0)
    same_inf = (ka == kr) & (ka >= 2)
    mismatch = ~finite & ~same_inf
    counts = np.bincount((ka[mismatch].astype(np.int64) * 4 + kr[mismatch]).ravel(), minlength=16)
    pairs = {f"{_KINDS[i // 4]}_vs_{_KINDS[i % 4]}": int(c) for i, c in enumerate(counts) if c}
    return Pairing(finite, mismatch, pairs)


def as_float64(values: Any) -> np.ndarray:
    return _flat(values).astype(np.float64)


# Elements compared at a time: the float64 temporaries of a comparison stay a few MB, whatever
# the number of validation rows (a whole 1M-row output took ~230 MB of them).
CHUNK_ELEMENTS = 1 << 18


def compare_arrays(actual: Any, reference: Any, tol: Tolerance, spread: float | None = None) -> dict[str, Any]:
    """Per-output metrics; out of tolerance = finite values too far apart or a non-finite mismatch,
    and (with tol.max_nrmse) `nrmse_exceeded` when the RMS error is too large for the outputs' spread.
    `spread`: the reference's RMS spread across rows when `reference` is only some of the rows (a
    probe); None takes it from `reference` itself."""
    a, r = _flat(actual), _flat(reference)
    if a.shape != r.shape:
        return {"elements": int(r.size), "shape_mismatch": 1, "actual_shape": list(a.shape), "reference_shape": list(r.shape),
                "max_abs_err": float("inf"), "max_rel_err": float("inf"), "mean_abs_err": float("inf"),
                "out_of_tol": int(r.size), "frac_out_of_tol": 1.0, "non_finite_mismatch": 0, "tol_usage": float("inf")}
    if tol.max_nrmse is not None and spread is None:
        spread = spread_rms(r)
    a, r = a.reshape(-1), r.reshape(-1)
    max_abs = max_rel = usage = sum_abs = sum_sq = sum_ref_sq = 0.0
    finite = too_far = mismatched = 0
    pairs: collections.Counter[str] = collections.Counter()
    for start in range(0, r.size, CHUNK_ELEMENTS):
        a_part, r_part = a[start:start + CHUNK_ELEMENTS], r[start:start + CHUNK_ELEMENTS]
        ac, rc = a_part.astype(np.float64), r_part.astype(np.float64)
        p = pair(ac, rc)
        rf = rc[p.finite]
        abs_err = np.abs(ac[p.finite] - rf)
        allowed = _allowed(rf, tol)
        too_far += int((abs_err > allowed).sum())
        mismatched += p.count
        pairs.update(p.pairs)
        finite += abs_err.size
        sum_abs += float(abs_err.sum())
        sum_sq += float(np.square(abs_err).sum())
        sum_ref_sq += float(np.square(rf).sum())
        max_abs = max(max_abs, float(abs_err.max(initial=0.0)))
        max_rel = max(max_rel, float((abs_err / np.maximum(np.abs(rf), REL_ERR_FLOOR)).max(initial=0.0)))
        usage = max(usage, _tol_usage(abs_err, allowed, p.count))
        mapped_pages.release([a_part, r_part])
    out_of_tol = too_far + mismatched
    metrics = {
        "elements": int(r.size),
        "max_abs_err": max_abs,
        "max_rel_err": max_rel,
        "mean_abs_err": sum_abs / finite if finite else 0.0,
        "out_of_tol": out_of_tol,
        "frac_out_of_tol": out_of_tol / r.size if r.size else 0.0,
        "non_finite_mismatch": mismatched,
        "tol_usage": usage,
    }
    if tol.max_nrmse is not None:
        score = nrmse(sum_sq, sum_ref_sq, finite, spread)
        metrics["nrmse"] = score
        metrics["nrmse_exceeded"] = int(score > tol.max_nrmse)
    if pairs:  # only when there are any, so `dvc exp show` gets no column per possible pair
        metrics["non_finite_pairs"] = dict(pairs)
    return metrics


def spread_rms(reference: Any) -> float:
    """RMS over the elements of their deviation from the mean over the rows at their position
    (finite elements only): what a zeroed, constant or frozen output's error is at least."""
    r = _flat(reference)
    if r.ndim == 0 or r.shape[0] == 0:
        return 0.0
    rows = r.reshape(r.shape[0], -1)
    total, count = 0.0, 0
    step = max(1, CHUNK_ELEMENTS // max(1, rows.shape[1]))
    sums, counts = np.zeros(rows.shape[1]), np.zeros(rows.shape[1])
    for start in range(0, rows.shape[0], step):  # two passes over row chunks: means, then deviations
        part = rows[start:start + step].astype(np.float64)
        ok = np.isfinite(part)
        sums += np.where(ok, part, 0.0).sum(axis=0)
        counts += ok.sum(axis=0)
    means = sums / np.maximum(counts, 1)
    for start in range(0, rows.shape[0], step):
        part = rows[start:start + step].astype(np.float64)
        ok = np.isfinite(part)
        total += float(np.square(np.where(ok, part - means, 0.0)).sum())
        count += int(ok.sum())
    return float(np.sqrt(total / count)) if count else 0.0


def nrmse(sum_sq_err: float, sum_sq_ref: float, count: int, spread: float) -> float:
    """RMS error over max(spread, NOISE_SPREAD * RMS of the reference); 0 for no error."""
    if not count or sum_sq_err == 0:
        return 0.0
    scale = max(spread, NOISE_SPREAD * float(np.sqrt(sum_sq_ref / count)))
    return float(np.sqrt(sum_sq_err / count) / scale) if scale > 0 else float("inf")


def _flat(values: Any) -> np.ndarray:
    """An array of `values` without widening it yet (compare_arrays widens chunk by chunk)."""
    if hasattr(values, "detach"):  # a torch.Tensor; numpy() refuses bf16
        values = values.detach().cpu()
        values = (values.float() if str(values.dtype) == "torch.bfloat16" else values).numpy()
    return np.asarray(values)


def _tol_usage(abs_err: np.ndarray, allowed: np.ndarray, non_finite_mismatch: int) -> float:
    """The worst element's error as a share of its tolerance (1.0 = at the limit): how close a passing
    output is to failing, comparable across settings where max_abs_err alone is not."""
    if non_finite_mismatch:
        return float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):
        usage = np.where(abs_err == 0, 0.0, abs_err / allowed)  # zero tolerance: any error is inf
    return float(usage.max(initial=0.0))


def out_of_tolerance(actual: Any, reference: Any, tol: Tolerance) -> np.ndarray:
    """Element mask of what compare_arrays counts as out of tolerance (same-shaped arrays)."""
    a, r = as_float64(actual), as_float64(reference)
    p = pair(a, r)
    mask = p.mismatch.copy()
    mask[p.finite] = np.abs(a[p.finite] - r[p.finite]) > _allowed(r[p.finite], tol)
    return mask


def _allowed(ref: np.ndarray, tol: Tolerance) -> np.ndarray:
    """The one tolerance rule: |actual - reference| may reach atol + rtol * |reference|."""
    return tol.atol + tol.rtol * np.abs(ref)


def describe_pairs(pairs: dict[str, int], actual: str, reference: str) -> list[str]:
    """'512 element(s) NaN in ONNX but finite in PyTorch', one phrase per kind of mismatch."""
    phrases = []
    for key, count in pairs.items():
        ka, kr = (_SHOWN[k] for k in key.split("_vs_"))
        if ka == kr:
            phrases.append(f"{count} element(s) {ka} in both {actual} and {reference} (NaN never agrees)")
        else:
            phrases.append(f"{count} element(s) {ka} in {actual} but {kr} in {reference}")
    return phrases


def problem(name: str, metrics: dict[str, Any], actual: str, reference: str) -> str | None:
    """One line for an output that is out of tolerance, None when it is within."""
    if metrics.get("shape_mismatch"):
        return f"{name}: {actual} shape {metrics['actual_shape']} vs {reference} shape {metrics['reference_shape']}"
    nrmse_line = (f"RMS error {metrics['nrmse']:.3g}x the outputs' spread across rows, over max_nrmse "
                  "(a zeroed, constant or frozen output?)") if metrics.get("nrmse_exceeded") else None
    if not metrics["out_of_tol"]:
        return f"{name}: {nrmse_line}" if nrmse_line else None
    parts = describe_pairs(metrics.get("non_finite_pairs", {}), actual, reference)
    too_far = metrics["out_of_tol"] - metrics["non_finite_mismatch"]
    if too_far:
        share = too_far / metrics["elements"] if metrics.get("elements") else 1.0
        parts.append(f"{too_far} element(s) ({share:.2%}) out of tolerance (max_abs_err {metrics['max_abs_err']:.3g})")
    return f"{name}: " + "; ".join(parts + ([nrmse_line] if nrmse_line else []))


def worst(values: list[float]) -> float:
    """max() that keeps NaN (Python's max() drops it or not depending on the order)."""
    return float(np.max(np.asarray(values, dtype=np.float64))) if values else 0.0
