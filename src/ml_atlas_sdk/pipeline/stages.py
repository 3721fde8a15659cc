"""One function per DVC stage: read inputs named by the config, call a step, write outputs."""
from __future__ import annotations

from typing import Any

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.models import load_model
from ml_atlas_sdk.pipeline import settings as s
from ml_atlas_sdk.pipeline.outputs import begin, finish, read_export_info, replaced_dir
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, EXPORT_INFO, ONNX_MODEL, PLOTS, TENSORS_DIR
from ml_atlas_sdk.pipeline.plots import write_error_quantiles
from ml_atlas_sdk.reports import write_json
from ml_atlas_sdk.steps.canonical import canonical_outputs
from ml_atlas_sdk.steps.export import export_model, require_exported_model
from ml_atlas_sdk.steps.roundtrip import roundtrip_model
from ml_atlas_sdk.steps.tensorize import CALIBRATION_INPUTS, VAL_INPUTS, VAL_OUTPUTS_USER, tensorize

Config = dict[str, Any]

# data.<setting> -> bundle file stem
DATA_FILES = {"val_inputs": VAL_INPUTS, "val_outputs": VAL_OUTPUTS_USER, "calibration_inputs": CALIBRATION_INPUTS}


def run_tensorize(cfg: Config) -> None:
    begin("tensorize", TENSORS_DIR)
    meta, skip, data = s.metadata(cfg), s.skip_policy(cfg), s.section(cfg, "data")
    if not data.get("val_inputs"):
        raise AtlasInputError("data.val_inputs: required, got nothing")
    tables = {
        stem: (tio.read_table(data[key], f"data.{key}"), str(data[key]))
        for key, stem in DATA_FILES.items()
        if data.get(key)
    }
    result = tensorize(tables, meta, skip, int(s.section(cfg, "checks").get("calib_min_rows", 1000)))
    with replaced_dir(TENSORS_DIR) as out:
        for stem, tensors in result.tensors.items():
            tio.save_tensors(tensors, out / f"{stem}.pt")
    finish(result.report)


def run_canonical_outputs(cfg: Config) -> None:
    begin("canonical_outputs", CANONICAL_OUTPUTS)
    meta, skip = s.metadata(cfg), s.skip_policy(cfg)
    model = load_model(s.model_source(cfg))
    inputs = tio.load_tensors(TENSORS_DIR / "val_inputs.pt")
    outputs, report = canonical_outputs(model, inputs, meta, skip, s.rows_per_run(cfg))
    tio.save_tensors(outputs, CANONICAL_OUTPUTS)
    finish(report)


def run_export(cfg: Config) -> None:
    begin("export", ONNX_MODEL.parent)
    meta, skip = s.metadata(cfg), s.skip_policy(cfg)
    settings = s.export_settings(cfg, meta)
    escalation = s.section(cfg, "escalation")
    model = load_model(s.model_source(cfg))
    inputs = tio.load_tensors(TENSORS_DIR / "val_inputs.pt")
    canonical = tio.load_tensors(CANONICAL_OUTPUTS)
    outcome, report = export_model(
        model, inputs, canonical, meta, settings, escalation.get("ladder") or [], bool(escalation.get("enabled", True)),
        s.tolerance(cfg), s.rows_per_run(cfg), ONNX_MODEL, skip,
    )
    if outcome.chosen is not None:
        write_json(EXPORT_INFO, {"accepted": outcome.accepted, "settings_used": report.extra["settings_used"],
                                 "export_sample_rows": outcome.sample_rows})
    finish(report)
    require_exported_model(outcome, "every attempt's log is in reports/export.json")


def run_roundtrip(cfg: Config) -> None:
    begin("roundtrip", PLOTS / "roundtrip")
    meta, skip = s.metadata(cfg), s.skip_policy(cfg)
    inputs = tio.load_tensors(TENSORS_DIR / "val_inputs.pt")
    canonical = tio.load_tensors(CANONICAL_OUTPUTS)
    export_rows = len(read_export_info()["export_sample_rows"])
    report, actual = roundtrip_model(ONNX_MODEL, inputs, canonical, meta, s.tolerance(cfg), s.rows_per_run(cfg), export_rows, skip)
    write_error_quantiles(PLOTS / "roundtrip", actual, canonical)
    finish(report)
