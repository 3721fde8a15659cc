"""One function per DVC stage: read inputs named by the config, call a step, write outputs."""
from __future__ import annotations

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.models import load_model
from ml_atlas_sdk.pipeline.outputs import begin, finish, read_export_info, replaced_dir
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, EXPORT_INFO, ONNX_MODEL, PLOTS, TENSORS_DIR
from ml_atlas_sdk.pipeline.plots import write_error_quantiles
from ml_atlas_sdk.reports import write_json
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.canonical import canonical_outputs
from ml_atlas_sdk.steps.export import export_model, require_exported_model
from ml_atlas_sdk.steps.roundtrip import roundtrip_model
from ml_atlas_sdk.steps.tensorize import CALIBRATION_INPUTS, VAL_INPUTS, VAL_OUTPUTS_USER, tensorize

# data.<setting> -> bundle file stem
DATA_FILES = {"val_inputs": VAL_INPUTS, "val_outputs": VAL_OUTPUTS_USER, "calibration_inputs": CALIBRATION_INPUTS}


def run_tensorize(cfg: Settings) -> None:
    begin("tensorize", TENSORS_DIR)
    data = cfg.data.model_dump()
    if not data["val_inputs"]:
        raise AtlasInputError("data.val_inputs: required, got nothing")
    tables = {
        stem: (tio.read_table(data[key], f"data.{key}"), str(data[key]))
        for key, stem in DATA_FILES.items()
        if data[key]
    }
    result = tensorize(tables, cfg.metadata, cfg.checks.policy, cfg.checks.calib_min_rows)
    with replaced_dir(TENSORS_DIR) as out:
        for stem, tensors in result.tensors.items():
            tio.save_tensors(tensors, out / f"{stem}.pt")
    finish(result.report)


def run_canonical_outputs(cfg: Settings) -> None:
    begin("canonical_outputs", CANONICAL_OUTPUTS)
    model = load_model(cfg.model)
    inputs = tio.load_tensors(TENSORS_DIR / "val_inputs.pt")
    outputs, report = canonical_outputs(model, inputs, cfg.metadata, cfg.checks.policy, cfg.roundtrip.batch_size)
    tio.save_tensors(outputs, CANONICAL_OUTPUTS)
    finish(report)


def run_export(cfg: Settings) -> None:
    begin("export", ONNX_MODEL.parent)
    settings, ladder = cfg.export_plan()
    model = load_model(cfg.model)
    inputs = tio.load_tensors(TENSORS_DIR / "val_inputs.pt")
    canonical = tio.load_tensors(CANONICAL_OUTPUTS)
    outcome, report = export_model(
        model, inputs, canonical, cfg.metadata, settings, ladder, cfg.escalation.enabled,
        cfg.roundtrip.tolerance, cfg.roundtrip.batch_size, ONNX_MODEL, cfg.checks.policy,
    )
    if outcome.chosen is not None:
        write_json(EXPORT_INFO, {"accepted": outcome.accepted, "settings_used": report.extra["settings_used"],
                                 "export_sample_rows": outcome.sample_rows})
    finish(report)
    require_exported_model(outcome, "every attempt's log is in reports/export.json")


def run_roundtrip(cfg: Settings) -> None:
    begin("roundtrip", PLOTS / "roundtrip")
    inputs = tio.load_tensors(TENSORS_DIR / "val_inputs.pt")
    canonical = tio.load_tensors(CANONICAL_OUTPUTS)
    export_rows = len(read_export_info()["export_sample_rows"])
    report, actual = roundtrip_model(ONNX_MODEL, inputs, canonical, cfg.metadata, cfg.roundtrip.tolerance,
                                     cfg.roundtrip.batch_size, export_rows, cfg.checks.policy)
    write_error_quantiles(PLOTS / "roundtrip", actual, canonical)
    finish(report)
