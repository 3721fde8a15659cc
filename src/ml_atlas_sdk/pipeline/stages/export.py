"""Stage export: PyTorch -> build/onnx/model.onnx (escalating settings if allowed), plus what was used."""
from __future__ import annotations

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.models import load_model, model_summary
from ml_atlas_sdk.pipeline import ort_reuse
from ml_atlas_sdk.pipeline.outputs import begin, finish
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, EXPORT_INFO, MODEL_SUMMARY, ONNX_MODEL, VAL_INPUTS_FILE
from ml_atlas_sdk.reports import write_json
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.export import export_model, require_exported_model


def run_export(cfg: Settings) -> None:
    begin("export", ONNX_MODEL.parent)
    model = load_model(cfg.model)
    inputs = tio.load_tensors(VAL_INPUTS_FILE, writable=True)
    canonical = tio.load_tensors(CANONICAL_OUTPUTS, writable=True)
    outcome, report = export_model(model, inputs, canonical, cfg, ONNX_MODEL)
    chosen = outcome.chosen
    if chosen is not None:
        kept = ort_reuse.keep(chosen.ort_run, cfg, len(outcome.sample_rows)) if chosen.ort_run else None
        write_json(EXPORT_INFO, {"accepted": outcome.accepted, "settings_used": report.extra["settings_used"],
                                 "hazards": report.extra["hazards"],
                                 "export_sample_rows": outcome.sample_rows, "ort_run": kept})
        write_json(MODEL_SUMMARY, model_summary(model))
    finish(report)
    require_exported_model(outcome, "every attempt's log is in reports/export.json")
