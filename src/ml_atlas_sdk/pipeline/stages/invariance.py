"""Stage invariance: the exported graph gives the same outputs at other batch sizes."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.models import load_model
from ml_atlas_sdk.pipeline import ort_reuse
from ml_atlas_sdk.pipeline.outputs import begin, finish, read_export_info
from ml_atlas_sdk.pipeline.paths import ONNX_MODEL, VAL_INPUTS_FILE
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.invariance import invariance_step


def run_invariance(cfg: Settings) -> None:
    begin("invariance")
    export_info = read_export_info()
    settings = ExportSettings.from_used(export_info["settings_used"])
    model = load_model(cfg.model)
    inputs = tio.load_tensors(VAL_INPUTS_FILE, writable=True)
    with tempfile.TemporaryDirectory(prefix="atlas-invariance-") as work:
        # The accepted export is one of the two graphs only if it was traced on these very tensors.
        current = (export_info.get("ort_run") or {}).get("axis_key") == ort_reuse.axis_key(cfg)
        accepted = (ONNX_MODEL, export_info["export_sample_rows"]) if current else None
        report = invariance_step(model, inputs, cfg.metadata, settings, cfg.checks.policy, Path(work), accepted)
    finish(report)
