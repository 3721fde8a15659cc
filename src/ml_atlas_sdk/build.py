"""The build, described once for both doors (`dvc repro` and `push_to_mlflow`): the check stages'
order, which data setting becomes which bundle file, and the built bundle they both hand to publish."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The bundle's file names stay in bundle.py (the consumer reads them from there); one import here.
from ml_atlas_sdk.bundle import (
    ARCHITECTURE, BUNDLE_DIR_NAME, CALIBRATION_INPUTS, MANIFEST, METADATA, MODEL_ONNX, TENSOR_FILES, VAL_INPUTS, VAL_OUTPUTS,
    VAL_OUTPUTS_USER, VALIDATION_REPORT, Manifest, tensor_file,
)
from ml_atlas_sdk.checks.result import CheckResult
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.run_record import RunRecord

__all__ = [
    "ARCHITECTURE", "BUNDLE_DIR_NAME", "MANIFEST", "METADATA", "MODEL_ONNX", "TENSOR_FILES", "VALIDATION_REPORT",
    "STAGE_ORDER", "VAL_INPUTS", "VAL_OUTPUTS", "VAL_OUTPUTS_USER", "CALIBRATION_INPUTS", "DATA_FILES",
    "BundleInputs", "BuiltBundle", "sdk_argument", "tensor_file",
]

# Stages whose checks gate the bundle, in pipeline order; validation_report.json lists checks in
# this order whichever door built it, so the two doors write the same bytes.
STAGE_ORDER = ("tensorize", "canonical_outputs", "export", "roundtrip", "invariance", "drift", "precision")

# data.<key> in params.yaml (the SDK's `<key>_df` argument) -> bundle file stem
DATA_FILES = {"val_inputs": VAL_INPUTS, "val_outputs": VAL_OUTPUTS_USER, "calibration_inputs": CALIBRATION_INPUTS}


def sdk_argument(data_key: str) -> str:
    """The AtlasArtifactBundle field that carries data.<data_key>, named in the SDK's errors."""
    return f"{data_key}_df"


@dataclass(frozen=True)
class BundleInputs:
    """What a build produced that goes into the bundle, whichever door produced it."""

    onnx: Path
    tensor_files: dict[str, Path]  # bundle file name -> where the build wrote it
    architecture_md: str | None
    metadata: ModelMetadata
    export_used: dict[str, Any]  # export settings actually used
    results: tuple[CheckResult, ...]  # in STAGE_ORDER
    source: dict[str, Any]  # provenance.source_info()
    schema_version: str
    record: RunRecord = RunRecord()  # metrics and error curves for the run, beside the bundle
    precision_hints: dict[str, list[str]] | None = None  # {"modules": [...]}; ONNX nodes are added from `onnx`


@dataclass(frozen=True)
class BuiltBundle:
    """A gated, written bundle folder and what publish records about it (params, tags, metrics)."""

    dir: Path
    manifest: Manifest
    metadata: ModelMetadata
    export_used: dict[str, Any]
    results: tuple[CheckResult, ...]
    source: dict[str, Any]
    schema_version: str
    record: RunRecord = RunRecord()
