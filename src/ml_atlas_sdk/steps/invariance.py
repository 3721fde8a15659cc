"""The invariance step: export twice on disjoint slices and compare the graphs."""
from __future__ import annotations

from pathlib import Path

import onnx
import torch

from ml_atlas_sdk.checks import CheckResult, SkipPolicy, Verdict, run_check
from ml_atlas_sdk.export.attempt import ExportFailed, export_onnx
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import as_torch, check_forward
from ml_atlas_sdk.reports import StageReport
from ml_atlas_sdk.tensors import row_count, slice_rows


def invariance_step(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    metadata: ModelMetadata,
    settings: ExportSettings,
    skip: SkipPolicy,
    work_dir: Path,
) -> StageReport:
    report = StageReport("invariance")
    inputs = as_torch(inputs)
    if "sample_invariance" in skip:
        report.add(run_check("sample_invariance", None, None, skip=skip))
        return report
    rows = row_count(inputs)
    size = min(settings.batch_size, rows // 2)
    if size < 2:
        report.add(CheckResult("sample_invariance", Verdict.SKIPPED, f"needs at least 4 validation rows, got {rows}",
                               {"reason": "too_few_rows"}))
        return report
    models = []
    for label, window in (("a", slice(0, size)), ("b", slice(size, 2 * size))):
        path = work_dir / label / "model.onnx"
        check_forward(model, slice_rows(inputs, window), metadata, range(window.start, window.stop))
        try:
            export_onnx(model, slice_rows(inputs, window), metadata, settings, path)
        except ExportFailed as exc:
            report.add(CheckResult("sample_invariance", Verdict.WARNED, f"export on slice {label} failed: {exc.summary}",
                                   {"slice": label, "rows": [window.start, window.stop]}))
            return report
        models.append(onnx.load(str(path), load_external_data=False))
    result = report.add(run_check("sample_invariance", *models, skip=skip))
    report.metrics = {"identical": result.details.get("identical"), "slice_rows": size}
    return report
