"""The invariance step: compare graphs exported on disjoint rows. The accepted export is one of
the two when there are enough rows outside its sample (one export here instead of two); else two
exports on disjoint slices."""
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
    accepted: tuple[Path, list[int]] | None = None,
) -> StageReport:
    """`accepted`: the accepted export's model.onnx and the rows it was traced on (same settings)."""
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
    slices = {"a": list(range(size)), "b": list(range(size, 2 * size))}
    models = {}
    if accepted is not None:
        path, sample = accepted
        outside = sorted(set(range(rows)) - set(sample))[: len(sample)]
        if len(outside) == len(sample) and path.is_file():  # same batch size, disjoint rows: the export is slice a
            slices = {"a": list(sample), "b": outside}
            models["a"] = onnx.load(str(path), load_external_data=False)
    for label, window in slices.items():
        if label in models:
            continue
        index = slice(window[0], window[-1] + 1) if window == list(range(window[0], window[-1] + 1)) else window
        check_forward(model, slice_rows(inputs, index), metadata, window)
        try:
            export_onnx(model, slice_rows(inputs, index), metadata, settings, work_dir / label / "model.onnx")
        except ExportFailed as exc:
            report.add(CheckResult("sample_invariance", Verdict.WARNED, f"export on slice {label} failed: {exc.summary}",
                                   {"slice": label, "rows": [window[0], window[-1] + 1]}))
            return report
        models[label] = onnx.load(str(work_dir / label / "model.onnx"), load_external_data=False)
    result = report.add(run_check("sample_invariance", models["a"], models["b"], skip=skip))
    report.metrics = {"identical": result.details.get("identical"), "slice_rows": len(slices["a"]),
                      "exports": 2 - (accepted is not None and slices["a"] == list(accepted[1]))}
    return report
