"""Stage canonical_outputs: the PyTorch model's outputs on val_inputs, the reference for every comparison."""
from __future__ import annotations

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.models import load_model
from ml_atlas_sdk.pipeline.outputs import begin, finish
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, VAL_INPUTS_FILE
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.canonical import canonical_outputs


def run_canonical_outputs(cfg: Settings) -> None:
    begin("canonical_outputs", CANONICAL_OUTPUTS)
    model = load_model(cfg.model)
    inputs = tio.load_tensors(VAL_INPUTS_FILE, writable=True)
    outputs, report = canonical_outputs(model, inputs, cfg.metadata, cfg.checks.policy, cfg.roundtrip.batch_size)
    tio.save_tensors(outputs, CANONICAL_OUTPUTS)
    finish(report)
