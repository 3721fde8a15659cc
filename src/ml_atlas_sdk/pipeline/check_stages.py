"""DVC stages invariance, drift and archdoc: read inputs named by the config, call a step, write outputs."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.archdoc import build_architecture_doc
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.models import load_model
from ml_atlas_sdk.pipeline.outputs import begin, finish, read_export_info
from ml_atlas_sdk.pipeline.paths import ARCHDOC, CANONICAL_OUTPUTS, ONNX_MODEL, PLOTS, TENSORS_DIR
from ml_atlas_sdk.pipeline.plots import write_error_quantiles
from ml_atlas_sdk.reports import StageReport
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.drift import drift_step
from ml_atlas_sdk.steps.invariance import invariance_step


def run_invariance(cfg: Settings) -> None:
    begin("invariance")
    settings = ExportSettings.from_used(read_export_info()["settings_used"])
    model = load_model(cfg.model)
    inputs = tio.load_tensors(TENSORS_DIR / "val_inputs.pt")
    with tempfile.TemporaryDirectory(prefix="atlas-invariance-") as work:
        report = invariance_step(model, inputs, cfg.metadata, settings, cfg.checks.policy, Path(work))
    finish(report)


def run_drift(cfg: Settings) -> None:
    begin("drift", PLOTS / "drift")
    user_path = TENSORS_DIR / "val_outputs_user.pt"
    user = tio.load_tensors(user_path) if user_path.is_file() else None
    canonical = tio.load_tensors(CANONICAL_OUTPUTS)
    report = drift_step(user, canonical, cfg.drift.tolerance_mse, cfg.drift.tolerance_max_abs, cfg.checks.policy)
    compared = None if user is None else {n: user[n].numpy() for n in canonical if n in user}
    write_error_quantiles(PLOTS / "drift", compared, canonical)  # headed, empty CSVs when skipped
    finish(report)


def run_archdoc(cfg: Settings) -> None:
    begin("archdoc", ARCHDOC.parent)
    archdoc = cfg.archdoc
    model = load_model(cfg.model)
    doc = build_architecture_doc(model, ONNX_MODEL, cfg.metadata, archdoc.source, archdoc.llm_model, archdoc.cache_dir)
    ARCHDOC.parent.mkdir(parents=True, exist_ok=True)
    if doc.markdown is not None:
        ARCHDOC.write_text(doc.markdown)
    report = StageReport("archdoc", metrics={"origin": doc.origin}, extra={"reason": doc.reason, "prompt_sha256": doc.prompt_sha256})
    report.write()
    print(f"[archdoc] {doc.origin}" + (f" ({doc.reason})" if doc.reason else ""), flush=True)
