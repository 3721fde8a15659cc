"""The canonical reference outputs: FP32 on CPU in eval mode, under no_grad."""
from __future__ import annotations

import numpy as np
import torch

from ml_atlas_sdk.checks import SkipPolicy, run_check
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import as_torch, run_canonical
from ml_atlas_sdk.ptfile import as_arrays
from ml_atlas_sdk.reports import StageReport


def canonical_outputs(
    model: torch.nn.Module,
    inputs: dict[str, np.ndarray],
    metadata: ModelMetadata,
    skip: SkipPolicy,
    batch_size: int,
) -> tuple[dict[str, np.ndarray], StageReport]:
    """The outputs as arrays: everything past the model (checks, ONNX Runtime, files) is numpy."""
    report = StageReport("canonical_outputs")
    outputs = run_canonical(model, as_torch(inputs), metadata.input_names, metadata.output_names, batch_size)
    report.add(run_check("nan_inf", outputs, "canonical outputs", skip=skip, subject="val_outputs"))
    report.metrics = {name: {"shape": list(t.shape), "mean": float(t.float().mean()), "std": float(t.float().std())}
                      for name, t in outputs.items()}
    return as_arrays(outputs), report
