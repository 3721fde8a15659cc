"""Stage precision: FP16 ranges and round trip, INT8 calibration coverage, precision hints."""
from __future__ import annotations

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.build import CALIBRATION_INPUTS, tensor_file
from ml_atlas_sdk.dtypes import FP16_MAX
from ml_atlas_sdk.models import load_model
from ml_atlas_sdk.pipeline.outputs import begin, finish
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, PLOTS, TENSORS_DIR, VAL_INPUTS_FILE
from ml_atlas_sdk.pipeline.plots import write_activation_depth
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.precision import precision_step


def run_precision(cfg: Settings) -> None:
    begin("precision", PLOTS / "precision")
    model = load_model(cfg.model)
    inputs = tio.load_tensors(VAL_INPUTS_FILE, writable=True)
    canonical = tio.load_tensors(CANONICAL_OUTPUTS, writable=True)
    calibration_path = TENSORS_DIR / tensor_file(CALIBRATION_INPUTS)
    calibration = tio.load_tensors(calibration_path, writable=True) if calibration_path.is_file() else None
    report = precision_step(model, inputs, canonical, calibration, cfg.metadata, cfg.precision, cfg.checks.policy,
                            cfg.roundtrip.batch_size)
    write_activation_depth(PLOTS / "precision", report.extra["modules"], FP16_MAX)  # header-only when no pass ran
    finish(report)
