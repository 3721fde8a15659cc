"""The SDK door: `push_to_mlflow(bundle, run)` runs the pipeline's steps in-process.

    bundle = AtlasArtifactBundle(model=model, metadata=ModelMetadata(...), val_inputs_df=df)
    with mlflow.start_run() as run:
        run_id = push_to_mlflow(bundle, run)
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ml_atlas_sdk import defaults
from ml_atlas_sdk import roundtrip as rt
from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.archdoc import build_architecture_doc
from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME
from ml_atlas_sdk.checks import CheckResult, SkipPolicy
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.metadata import ModelMetadata, format_validation_error
from ml_atlas_sdk.provenance import source_info
from ml_atlas_sdk.reports import as_written
from ml_atlas_sdk.steps.canonical import canonical_outputs
from ml_atlas_sdk.steps.drift import drift_step
from ml_atlas_sdk.steps.export import export_model, require_exported_model
from ml_atlas_sdk.steps.invariance import invariance_step
from ml_atlas_sdk.steps.roundtrip import roundtrip_model
from ml_atlas_sdk.steps.tensorize import CALIBRATION_INPUTS, VAL_INPUTS, VAL_OUTPUTS_USER, tensorize
from ml_atlas_sdk.steps.upload import build_bundle, publish


class AtlasArtifactBundle(BaseModel):
    """Everything one push needs, validated when it is built."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: torch.nn.Module
    metadata: ModelMetadata
    val_inputs_df: pd.DataFrame
    val_outputs_df: pd.DataFrame | None = None
    calibration_inputs_df: pd.DataFrame | None = None
    export_batch_size: int = Field(defaults.EXPORT_BATCH_SIZE, ge=2)
    architecture_doc: str | Path | None = "auto"
    skip_sdk_validations: bool | set[str] | frozenset[str] | list[str] = False
    drift_tolerance_mse: float = Field(defaults.DRIFT_TOLERANCE_MSE, ge=0)
    drift_tolerance_max_abs: float = Field(defaults.DRIFT_TOLERANCE_MAX_ABS, ge=0)
    bundle_schema_version: str = defaults.BUNDLE_SCHEMA_VERSION

    @field_validator("skip_sdk_validations")
    @classmethod
    def _known_checks(cls, value):
        SkipPolicy(value, "skip_sdk_validations")  # raises on unknown names
        return value

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise AtlasInputError(format_validation_error(exc, "AtlasArtifactBundle")) from None


def push_to_mlflow(
    bundle: AtlasArtifactBundle,
    run: Any = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    register_model: str | None = None,
    work_dir: str | Path | None = None,
) -> str:
    """Run every step and check in-process; push only if all non-skipped checks passed.

    `run` is an MLflow run (what `mlflow.start_run()` returns), a run id, or None for a new run
    in `experiment`. `register_model` names a registry entry to add the ONNX model to.
    Raises AtlasBundleError listing the failed checks; nothing is uploaded then.
    """
    import mlflow

    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    run_id = run if isinstance(run, str) or run is None else run.info.run_id
    experiment = experiment or _experiment_of(run_id, tracking_uri) or defaults.MLFLOW_EXPERIMENT
    with tempfile.TemporaryDirectory(prefix="atlas-sdk-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        bundle_dir, manifest, meta, export_used, results, source = build_in_process(bundle, work)
        pushed = publish(bundle_dir, manifest, meta, export_used, results, source, bundle.bundle_schema_version,
                         {"tracking_uri": tracking_uri, "experiment": experiment, "run_id": run_id,
                          "register_model": register_model},
                         on_file=lambda name, done, total: print(f"  uploaded {done}/{total} {name}", flush=True))
    print(f"[atlas] {'reused complete run' if pushed.reused else 'pushed run'} {pushed.run_id}", flush=True)
    return pushed.run_id


def build_in_process(bundle: AtlasArtifactBundle, work: Path):
    """The pipeline's stages, in the same order, on in-memory objects; returns the built bundle."""
    meta = bundle.metadata
    skip = SkipPolicy(bundle.skip_sdk_validations, "skip_sdk_validations")
    frames = {VAL_INPUTS: bundle.val_inputs_df, VAL_OUTPUTS_USER: bundle.val_outputs_df,
              CALIBRATION_INPUTS: bundle.calibration_inputs_df}
    tables = {stem: (tio.frame_to_table(df), f"{stem}_df") for stem, df in frames.items() if df is not None}
    tensorized = tensorize(tables, meta, skip, defaults.CALIB_MIN_ROWS)
    tensorized.report.print_summary()
    inputs = tensorized.tensors[VAL_INPUTS]
    canonical, canonical_report = canonical_outputs(bundle.model, inputs, meta, skip, defaults.ROWS_PER_RUN)
    canonical_report.print_summary()
    settings = ExportSettings(opset=meta.onnx_opset, do_constant_folding=defaults.DO_CONSTANT_FOLDING,
                              dynamo=defaults.DYNAMO, batch_size=bundle.export_batch_size)
    tol = rt.Tolerance(defaults.ROUNDTRIP_RTOL, defaults.ROUNDTRIP_ATOL)
    onnx_path = work / "onnx" / "model.onnx"
    outcome, export_report = export_model(bundle.model, inputs, canonical, meta, settings, defaults.ESCALATION_LADDER,
                                          defaults.ESCALATION_ENABLED, tol, defaults.ROWS_PER_RUN, onnx_path, skip)
    export_report.print_summary()
    require_exported_model(outcome, "see the attempts printed above")
    roundtrip_report, _ = roundtrip_model(onnx_path, inputs, canonical, meta, tol, defaults.ROWS_PER_RUN,
                                          len(outcome.sample_rows), skip)
    roundtrip_report.print_summary()
    invariance_report = invariance_step(bundle.model, inputs, meta, outcome.chosen.settings, skip, work / "invariance")
    invariance_report.print_summary()
    drift_report = drift_step(tensorized.tensors.get(VAL_OUTPUTS_USER), canonical, bundle.drift_tolerance_mse,
                              bundle.drift_tolerance_max_abs, skip)
    drift_report.print_summary()
    # Same order as the pipeline's CHECK_STAGES, so validation_report.json is identical.
    reports = [tensorized.report, canonical_report, export_report, roundtrip_report, invariance_report, drift_report]
    results: list[CheckResult] = as_written([c for r in reports for c in r.checks])
    source = source_info()  # no DVC_STAGE here, so no dvc.lock hash
    doc = build_architecture_doc(bundle.model, onnx_path, meta, bundle.architecture_doc,
                                 defaults.ARCHDOC_LLM_MODEL, None)
    tensor_files = {}
    for stem, tensors in {**tensorized.tensors, "val_outputs": canonical}.items():
        tensor_files[f"{stem}.pt"] = tio.save_tensors(tensors, work / "tensors" / f"{stem}.pt")
    export_used = export_report.extra["settings_used"]
    bundle_dir = work / "bundle" / BUNDLE_DIR_NAME
    manifest = build_bundle(bundle_dir, onnx_path, tensor_files, meta, export_used, results, doc.markdown,
                            source, bundle.bundle_schema_version)
    return bundle_dir, manifest, meta, export_used, results, source


def _experiment_of(run_id: str | None, tracking_uri: str) -> str | None:
    if run_id is None:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name

