"""The dtype policy: which dtype each bundle tensor holds, and which casts count as exact.

`metadata.input_dtypes[name]`, where given, is the dtype the ONNX input receives, so it is also
the dtype `val_inputs.pt` (and `calibration_inputs.pt`) holds for that column. Without it:
floats become float32, ints int64, bools bool. A cast happens only when it is exact:

- bool to anything; any int or float to bool only when every value is 0 or 1;
- int to a narrower or wider int when every value is within the target's range;
- int to float when every value is within +-2^(mantissa bits + 1) (2^24 for float32);
- float to a wider float; float64 to float32 (or float16) rounds, which is accepted, but a finite
  value beyond the target's range (it would become inf) is refused; NaN and inf stay as they are;
- float to int only for whole numbers within the target's range (NaN and inf are refused).

Anything else stops with one line naming the column, the file's row and the offending value.
"""
from __future__ import annotations

import numpy as np

from ml_atlas_sdk.errors import AtlasInputError

FP16_MAX = float(np.finfo(np.float16).max)  # 65504: what FP16 engines overflow past
SUPPORTED_DTYPES = ("float32", "float16", "float64", "int64", "int32", "bool")
_DEFAULT_BY_KIND = {"f": "float32", "i": "int64", "u": "int64", "b": "bool"}
_KIND_WORD = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def dtype_name(tensor) -> str:
    """"float32", "int64", "bool"...: one spelling for numpy arrays and torch tensors alike."""
    return str(tensor.dtype).removeprefix("torch.")


def target_dtype(source: np.dtype, declared: str | None) -> np.dtype:
    """The dtype a column of `source` values becomes, declared or by the default rule."""
    if declared is not None:
        return np.dtype(declared)
    return np.dtype(_DEFAULT_BY_KIND[source.kind])


def cast_exact(values: np.ndarray, declared: str | None, where: str, first_row: int = 0) -> np.ndarray:
    """`values` (first axis = rows) cast to its target dtype, or one AtlasInputError naming the row.

    `where` is "<file>: column 'name'"; `values` start at the file's row `first_row`, so row
    numbers count from the file's first row.
    """
    if values.dtype.kind not in _DEFAULT_BY_KIND:
        raise AtlasInputError(f"{where}: dtype {values.dtype} is not numeric")
    target = target_dtype(values.dtype, declared)
    if values.dtype == target:
        return values
    bad = _inexact(values, target)
    if bad is not None and bad.any():
        flat = int(np.flatnonzero(bad)[0])
        per_row = max(1, int(np.prod(values.shape[1:], dtype=np.int64)))
        why = ("metadata.input_dtypes" if declared is not None else
               f"{_KIND_WORD[values.dtype.kind]} columns become {target} unless metadata.input_dtypes says otherwise")
        raise AtlasInputError(
            f"{where} row {first_row + flat // per_row}: value {values.reshape(-1)[flat]} cannot be cast exactly "
            f"to {target} ({why})"
        )
    return values.astype(target)


def _inexact(values: np.ndarray, target: np.dtype) -> np.ndarray | None:
    """Mask of the values that the cast to `target` would change (beyond accepted float rounding)."""
    src = values.dtype.kind
    if src == "b":
        return None
    if target.kind == "b":
        return (values != 0) & (values != 1)
    if target.kind == "i":
        info = np.iinfo(target)
        if src == "f":
            # float(2**63 - 1) rounds up to 2**63, so compare against max + 1 exclusively.
            return ~(np.isfinite(values) & (values == np.trunc(values))
                     & (values >= float(info.min)) & (values < float(info.max) + 1.0))
        if np.can_cast(values.dtype, target):
            return None
        return (values < info.min) | (values > info.max)
    # target is a float
    if src == "f":
        if np.finfo(values.dtype).max <= np.finfo(target).max:
            return None
        return np.isfinite(values) & (np.abs(values) > np.finfo(target).max)
    limit = 2 ** (np.finfo(target).nmant + 1)
    if np.iinfo(values.dtype).max <= limit and np.iinfo(values.dtype).min >= -limit:
        return None
    return (values < -limit) | (values > limit)
