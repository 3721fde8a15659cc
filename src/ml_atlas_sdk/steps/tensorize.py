"""Validation tables -> tensors, with the data checks."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ml_atlas_sdk.build import CALIBRATION_INPUTS, VAL_INPUTS, VAL_OUTPUTS_USER  # noqa: F401 (tests/test_zoo.py imports VAL_INPUTS here)
from ml_atlas_sdk.checks import SkipPolicy, Verdict, run_check
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.reports import StageReport
from ml_atlas_sdk.tensors import row_count, table_to_tensors


@dataclass
class TensorizeResult:
    tensors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # by bundle file stem
    report: StageReport = field(default_factory=lambda: StageReport("tensorize"))


def tensorize(
    tables: dict[str, tuple[pa.Table | pq.ParquetFile, str]],
    metadata: ModelMetadata,
    skip: SkipPolicy,
    calib_min_rows: int,
) -> TensorizeResult:
    """`tables` maps val_inputs (required), val_outputs_user, calibration_inputs to (table, where);
    `where` (a file path or DataFrame name) appears in errors about data that cannot be read."""
    result = TensorizeResult()
    report = result.report
    for stem, (table, where) in tables.items():
        is_output = stem == VAL_OUTPUTS_USER
        names = metadata.output_names if is_output else metadata.input_names
        shapes = metadata.output_shape if is_output else metadata.input_shapes
        # Inputs (val and calibration) get the dtype the ONNX graph receives; outputs the defaults.
        declared = {} if is_output else metadata.dtype_of
        tensors = table_to_tensors(table, names, where, declared)
        # Check messages name the bundle file, not the source path, so both front doors (files
        # or DataFrames) write the same validation report for the same data.
        report.add(run_check("df_shape_dtype", tensors, shapes, declared, stem, skip=skip, subject=stem))
        # NaN/Inf in the user's own reference outputs only makes drift meaningless: warn.
        report.add(run_check("nan_inf", tensors, stem, skip=skip, subject=stem, severity=Verdict.WARNED if is_output else None))
        result.tensors[stem] = tensors
        report.metrics[f"{stem}_rows"] = row_count(tensors)
    calib = result.tensors.get(CALIBRATION_INPUTS)
    report.add(run_check("calib_sample_count", row_count(calib) if calib else None, calib_min_rows, skip=skip))
    return result
