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

import numpy as np

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.ort_engine import OrtRun
from ml_atlas_sdk.pipeline.paths import AXIS_OUTPUTS, CANONICAL_OUTPUTS, ONNX_MODEL, ORT_OUTPUTS, VAL_INPUTS_FILE
from ml_atlas_sdk.provenance import file_sha256
from ml_atlas_sdk.settings import Settings


def axis_key(settings: Settings) -> dict[str, Any]:
    """What the dynamic-axis probes' outputs depend on (not the tolerances they are judged by)."""
    files = [*sorted(ONNX_MODEL.parent.glob(ONNX_MODEL.name + "*")), VAL_INPUTS_FILE]
    return {"files": {p.as_posix(): file_sha256(p) for p in files}, "axis_sizes": settings.checks.axis_sizes}


def run_key(settings: Settings, export_rows: int) -> dict[str, Any]:
    """What an ORT run's outputs, batch probe and dynamic-axis verdicts depend on."""
    roundtrip = settings.roundtrip
    return {**axis_key(settings), "canonical": file_sha256(CANONICAL_OUTPUTS), "rows_per_run": roundtrip.batch_size,
            "tolerances": {n: t.to_dict() for n, t in settings.roundtrip_tolerances.items()},
            "localize_rows": roundtrip.localize_rows, "export_rows": export_rows,
            "probe_axes": "dynamic_axes" not in settings.checks.policy}


def keep(run: OrtRun, settings: Settings, export_rows: int) -> dict[str, Any]:
    """Write the run's outputs (and what ran at each axis size) beside model.onnx; returns what
    export_info.json records of it."""
    tio.save_tensors(run.outputs, ORT_OUTPUTS)
    arrays, entries = {}, []
    for i, entry in enumerate(run.axis_raw or []):
        raw = entry["raw"] or {}
        for side in ("reference", "onnx"):
            arrays.update({f"{i}/{side}/{name}": value for name, value in (raw.get(side) or {}).items()})
        entries.append({**{k: v for k, v in entry.items() if k != "raw"}, "ran": entry["raw"] is not None,
                        "errors": {k: v for k, v in raw.items() if k.endswith("_error")}})
    np.savez(AXIS_OUTPUTS, **arrays)
    return {"key": run_key(settings, export_rows), "batch_probe": run.batch_probe, "localization": run.localization,
            "axis_probes": run.axis_probes, "axis_key": axis_key(settings), "axis_raw": entries}


def reusable(export_info: dict[str, Any], settings: Settings, export_rows: int) -> OrtRun | None:
    kept = export_info.get("ort_run")
    if not kept or not ORT_OUTPUTS.is_file() or kept["key"] != run_key(settings, export_rows):
        return None
    return OrtRun(tio.load_tensors(ORT_OUTPUTS), kept["batch_probe"], kept.get("localization"), kept.get("axis_probes"))


def axis_outcomes(export_info: dict[str, Any], settings: Settings) -> list[dict[str, Any]] | None:
    """What ran at each dynamic-axis size of this very model and plan (for axis_probe.rejudge under
    this stage's tolerances), or None."""
    kept = export_info.get("ort_run") or {}
    if not kept.get("axis_raw") or not AXIS_OUTPUTS.is_file() or kept.get("axis_key") != axis_key(settings):
        return None
    with np.load(AXIS_OUTPUTS) as stored:
        arrays = {key: stored[key] for key in stored.files}
    entries = []
    for i, entry in enumerate(kept["axis_raw"]):
        raw = None
        if entry["ran"]:
            raw = dict(entry["errors"])
            for side in ("reference", "onnx"):
                found = {key.split("/", 2)[2]: value for key, value in arrays.items() if key.startswith(f"{i}/{side}/")}
                if found:
                    raw[side] = found
        entries.append({**{k: v for k, v in entry.items() if k not in ("ran", "errors")}, "raw": raw})
    return entries
