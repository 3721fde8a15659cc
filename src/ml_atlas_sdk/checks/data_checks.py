"""Checks on the validation tensors: shapes and dtypes vs metadata, NaN/Inf, calibration size."""
from __future__ import annotations

import numpy as np

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.dtypes import dtype_name
from ml_atlas_sdk.checks.result import Finding

# The dtype policy's defaults (ml_atlas_sdk.dtypes) for columns without a declared dtype.
_DEFAULT_DTYPES = ("float32", "int64", "bool")


@check("df_shape_dtype")
def df_shape_dtype(
    tensors: dict[str, np.ndarray],
    expected_shapes: dict[str, list[int]],
    expected_dtypes: dict[str, str],
    where: str,
) -> Finding:
    """Each column's cell shape matches the metadata shape (batch axis aside) and its dtype is the
    declared one (metadata.input_dtypes) or, undeclared, one of float32, int64, bool."""
    problems, observed = [], {}
    for name, tensor in tensors.items():
        shape = expected_shapes[name]
        observed[name] = {"shape": list(tensor.shape), "dtype": dtype_name(tensor)}
        if tensor.ndim != len(shape):
            problems.append(f"column {name!r}: rank {tensor.ndim} (shape {list(tensor.shape)}) but metadata shape is {shape}")
            continue
        wrong = [
            f"axis {axis} is {got}, expected {want}"
            for axis, (got, want) in enumerate(zip(tensor.shape, shape))
            if axis > 0 and want != -1 and got != want
        ]
        if wrong:
            problems.append(f"column {name!r}: cell shape {list(tensor.shape[1:])} vs metadata {shape[1:]} ({', '.join(wrong)})")
        got, declared = observed[name]["dtype"], expected_dtypes.get(name)
        if declared and got != declared:
            problems.append(f"column {name!r}: dtype {got} but metadata input_dtypes says {declared}")
        elif not declared and got not in _DEFAULT_DTYPES:
            problems.append(f"column {name!r}: dtype {got}, expected one of {list(_DEFAULT_DTYPES)}")
    details = {"where": where, "columns": observed, "problems": problems}
    if problems:
        return Finding(False, f"{where}: " + "; ".join(problems), details)
    return Finding(True, f"{where}: {len(tensors)} column(s) match the metadata", details)


@check("nan_inf")
def nan_inf(tensors: dict[str, np.ndarray], where: str) -> Finding:
    """No NaN or Inf in any float tensor; names each column with its count and first row."""
    counts, problems = {}, []
    for name, tensor in tensors.items():
        tensor = np.asarray(tensor)
        if tensor.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(tensor)
        count = int(bad.sum())
        counts[name] = count
        if count:
            first_row = int(np.flatnonzero(bad.reshape(tensor.shape[0], -1).any(axis=1))[0])
            problems.append(f"column {name!r} has {count} NaN/Inf value(s), first at row {first_row}")
    details = {"where": where, "non_finite_counts": counts}
    if problems:
        return Finding(False, f"{where}: " + "; ".join(problems), details)
    return Finding(True, f"{where}: all values finite", details)


@check("calib_sample_count")
def calib_sample_count(rows: int | None, min_rows: int) -> Finding:
    if rows is None:
        return Finding(None, "no calibration_inputs supplied; INT8 calibration will need its own data", {})
    details = {"rows": rows, "min_rows": min_rows}
    if rows < min_rows:
        return Finding(False, f"calibration_inputs has {rows} rows, fewer than checks.calib_min_rows={min_rows}", details)
    return Finding(True, f"calibration_inputs has {rows} rows (>= {min_rows})", details)
