"""The export stage's ORT run of the model it wrote (and its localization, if it failed), kept for
the roundtrip stage.

The export stage judges each attempt by running ONNX Runtime over every validation row; the
roundtrip stage reuses the written attempt's run instead of repeating it, but only when that run was
computed from the same model files, tensors and settings (digests in export_info.json). Otherwise,
e.g. `dvc repro -s roundtrip` after the tensors changed or a model.onnx replaced by hand, the
roundtrip stage runs ORT itself.
"""
from __future__ import annotations

from typing import Any

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.ort_engine import OrtRun
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, ONNX_MODEL, ORT_OUTPUTS, VAL_INPUTS_FILE
from ml_atlas_sdk.provenance import file_sha256
from ml_atlas_sdk.settings import Settings


def run_key(settings: Settings, export_rows: int) -> dict[str, Any]:
    """What an ORT run's outputs, batch probe and dynamic-axis probes depend on."""
    roundtrip = settings.roundtrip
    files = [*sorted(ONNX_MODEL.parent.glob(ONNX_MODEL.name + "*")), VAL_INPUTS_FILE, CANONICAL_OUTPUTS]
    return {"files": {p.as_posix(): file_sha256(p) for p in files}, "rows_per_run": roundtrip.batch_size,
            "tolerances": {n: t.to_dict() for n, t in settings.roundtrip_tolerances.items()},
            "localize_rows": roundtrip.localize_rows, "export_rows": export_rows,
            "axis_sizes": settings.checks.axis_sizes, "probe_axes": "dynamic_axes" not in settings.checks.policy}


def keep(run: OrtRun, settings: Settings, export_rows: int) -> dict[str, Any]:
    """Write the run's outputs beside model.onnx; returns what export_info.json records of it."""
    tio.save_tensors(run.outputs, ORT_OUTPUTS)
    return {"key": run_key(settings, export_rows), "batch_probe": run.batch_probe, "localization": run.localization,
            "axis_probes": run.axis_probes}


def reusable(export_info: dict[str, Any], settings: Settings, export_rows: int) -> OrtRun | None:
    kept = export_info.get("ort_run")
    if not kept or not ORT_OUTPUTS.is_file() or kept["key"] != run_key(settings, export_rows):
        return None
    return OrtRun(tio.load_tensors(ORT_OUTPUTS), kept["batch_probe"], kept.get("localization"), kept.get("axis_probes"))
