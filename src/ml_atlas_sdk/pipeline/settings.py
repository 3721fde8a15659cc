"""Typed views of the composed config (params.yaml), each naming the setting at fault."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ml_atlas_sdk import roundtrip as rt
from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import ModelSource


def section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    value = cfg.get(name)
    if not isinstance(value, dict):
        raise AtlasInputError(f"params: the {name!r} section is missing or not a mapping")
    return value


def metadata(cfg: dict[str, Any]) -> ModelMetadata:
    return ModelMetadata.from_config(section(cfg, "metadata"))


def skip_policy(cfg: dict[str, Any]) -> SkipPolicy:
    return SkipPolicy(section(cfg, "checks").get("skip"), "checks.skip")


# Folders dvc.yaml lists as dependencies of the stages that build the model.
TRACKED_CODE_DIRS = ("models", "data", "src")


def model_source(cfg: dict[str, Any]) -> ModelSource:
    source = ModelSource.from_config(section(cfg, "model"))
    if "DVC_STAGE" in os.environ:
        for code_dir in source.code_dirs:
            top = Path(code_dir).parts[0] if Path(code_dir).parts else ""
            if Path(code_dir).is_absolute() or top not in TRACKED_CODE_DIRS:
                print(f"warning: model.code_dirs: {code_dir} is not under {list(TRACKED_CODE_DIRS)}, so DVC does not "
                      "rerun stages when it changes; move it under models/ or add it to the deps in dvc.yaml", flush=True)
    return source


def export_settings(cfg: dict[str, Any], meta: ModelMetadata) -> ExportSettings:
    settings = ExportSettings.from_config(section(cfg, "export"))
    if settings.opset < meta.onnx_opset:
        raise AtlasInputError(f"export.opset: {settings.opset} is below metadata.onnx_opset {meta.onnx_opset}")
    return settings


def tolerance(cfg: dict[str, Any]) -> rt.Tolerance:
    raw = section(cfg, "roundtrip")
    return rt.Tolerance(rtol=_positive(raw, "rtol", "roundtrip"), atol=_positive(raw, "atol", "roundtrip"))


def rows_per_run(cfg: dict[str, Any]) -> int:
    value = section(cfg, "roundtrip").get("batch_size", 256)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AtlasInputError(f"roundtrip.batch_size: expected a positive integer, got {value!r}")
    return value


def _positive(raw: dict[str, Any], key: str, where: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise AtlasInputError(f"{where}.{key}: expected a non-negative number, got {value!r}")
    return float(value)
