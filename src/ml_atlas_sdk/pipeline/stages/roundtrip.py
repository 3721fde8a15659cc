"""Stage roundtrip: ONNX Runtime outputs on val_inputs against the canonical outputs, and at other
sizes of every dynamic axis (the model is built only when the export's runs cannot be reused: to
probe the axes or to localize a failure)."""
from __future__ import annotations

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.pipeline import ort_reuse
from ml_atlas_sdk.pipeline.outputs import begin, finish, read_export_info
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, ONNX_MODEL, PLOTS, VAL_INPUTS_FILE
from ml_atlas_sdk.pipeline.plots import write_error_quantiles, write_localization
from ml_atlas_sdk.run_record import headline
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.roundtrip import roundtrip_model


def _model(cfg: Settings):
    from ml_atlas_sdk.models import load_model  # torch, only to localize a failure

    return load_model(cfg.model)


def run_roundtrip(cfg: Settings) -> None:
    begin("roundtrip", PLOTS / "roundtrip", PLOTS / "localization")
    inputs = tio.load_tensors(VAL_INPUTS_FILE)
    canonical = tio.load_tensors(CANONICAL_OUTPUTS)
    export_info = read_export_info()
    export_rows = len(export_info["export_sample_rows"])
    reused = ort_reuse.reusable(export_info, cfg, export_rows)
    axis_raw = None if reused else ort_reuse.axis_outcomes(export_info, cfg)
    report, actual = roundtrip_model(ONNX_MODEL, inputs, canonical, cfg, export_rows, lambda: _model(cfg), reused,
                                      export_info.get("hazards", []), axis_raw)
    write_error_quantiles(PLOTS / "roundtrip", actual, canonical)
    write_localization(PLOTS / "localization", report.extra["localization"])
    report.extra.update(headline(report.to_dict(), export_info["settings_used"]))
    finish(report)
