"""Drift: the user's own reference outputs against the canonical FP32-CPU ones."""
from __future__ import annotations

from typing import Any

import numpy as np

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding
from ml_atlas_sdk.compare import as_float64, describe_pairs, pair, worst

PCT_FLOOR = 1e-6  # keeps percentage errors finite where the canonical value is exactly zero
COSINE_MIN_LAST_AXIS = 8  # cosine similarity says little about very short vectors
USER, CANONICAL = "user val_outputs", "canonical"


def drift_metrics(user: np.ndarray, canonical: np.ndarray) -> dict[str, Any]:
    """Errors over the elements finite on both sides; `non_finite_mismatch` counts the others."""
    u, c = as_float64(user), as_float64(canonical)
    p = pair(u, c)
    diff = u[p.finite] - c[p.finite]
    abs_err = np.abs(diff)
    pct = 100.0 * abs_err / np.maximum(np.abs(c[p.finite]), PCT_FLOOR)
    metrics: dict[str, Any] = {
        "mse": float(np.mean(diff**2)) if diff.size else 0.0,
        "max_abs_err": float(abs_err.max(initial=0.0)),
        "mean_abs_err": float(abs_err.mean()) if diff.size else 0.0,
        "max_pct_err": float(pct.max(initial=0.0)),
        "mean_pct_err": float(pct.mean()) if diff.size else 0.0,
        "non_finite_mismatch": p.count,
    }
    if p.pairs:
        metrics["non_finite_pairs"] = p.pairs
    if c.ndim >= 2 and c.shape[-1] >= COSINE_MIN_LAST_AXIS:
        rows_u, rows_c = u.reshape(-1, c.shape[-1]), c.reshape(-1, c.shape[-1])
        finite_rows = p.finite.reshape(-1, c.shape[-1]).all(axis=1)  # a NaN row has no direction
        rows_u, rows_c = rows_u[finite_rows], rows_c[finite_rows]
        if len(rows_c):
            norms = np.linalg.norm(rows_u, axis=1) * np.linalg.norm(rows_c, axis=1)
            metrics["cosine_sim"] = float(np.mean(np.sum(rows_u * rows_c, axis=1) / np.maximum(norms, 1e-12)))
    return metrics


def non_finite_counts(outputs: dict[str, np.ndarray]) -> dict[str, int]:
    arrays = {n: np.asarray(t) for n, t in outputs.items()}
    return {n: int((~np.isfinite(a)).sum()) for n, a in arrays.items() if a.dtype.kind in "fc"}


@check("drift")
def drift(
    user_outputs: dict[str, np.ndarray] | None,
    canonical: dict[str, np.ndarray],
    tolerance_mse: float,
    tolerance_max_abs: float,
) -> Finding:
    """Fails on drift past either tolerance and on any NaN/Inf one side has and the other lacks.

    details["user_non_finite_only"] is true when the only problem is NaN/Inf in the user's
    outputs where the canonical ones are finite: drift is unmeasurable there, not the model wrong.
    """
    if user_outputs is None:
        return Finding(None, "no user val_outputs supplied (data.val_outputs); nothing to compare", {"reason": "no_user_outputs"})
    details: dict = {"tolerance_mse": tolerance_mse, "tolerance_max_abs": tolerance_max_abs, "outputs": {}}
    bad_values = {n: c for n, c in non_finite_counts(user_outputs).items() if c}
    if bad_values:
        details["non_finite_counts"] = bad_values
    problems, user_side_only = [], True
    for name, ref in canonical.items():
        got = user_outputs[name]
        if got.shape != ref.shape:
            problems.append(f"{name!r}: user shape {list(got.shape)} vs canonical {list(ref.shape)}")
            user_side_only = False
            continue
        metrics = drift_metrics(got, ref)
        details["outputs"][name] = metrics
        parts = describe_pairs(metrics.get("non_finite_pairs", {}), USER, CANONICAL)
        user_side_only &= all(k.endswith("_vs_finite") for k in metrics.get("non_finite_pairs", {}))
        if metrics["mse"] > tolerance_mse or metrics["max_abs_err"] > tolerance_max_abs:
            parts.append(f"mse {metrics['mse']:.3g} (tolerance {tolerance_mse:g}), "
                         f"max_abs_err {metrics['max_abs_err']:.3g} (tolerance {tolerance_max_abs:g})")
            user_side_only = False
        if parts:
            problems.append(f"{name!r}: " + "; ".join(parts))
    if problems:
        details["user_non_finite_only"] = user_side_only
        return Finding(False, "user val_outputs drift from canonical: " + "; ".join(problems), details)
    largest = worst([m["max_abs_err"] for m in details["outputs"].values()])
    return Finding(True, f"{len(canonical)} output(s) within tolerance (max_abs_err {largest:.3g})", details)
