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
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError, field_validator

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.archdoc import build_architecture_doc
from ml_atlas_sdk.build import (
    BUNDLE_DIR_NAME, CALIBRATION_INPUTS, DATA_FILES, STAGE_ORDER, VAL_INPUTS, VAL_OUTPUTS, VAL_OUTPUTS_USER, BuiltBundle,
    BundleInputs, sdk_argument, tensor_file,
)
from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.metadata import ModelMetadata, in_schema
from ml_atlas_sdk.models import model_summary
from ml_atlas_sdk.precision.hints import HINTS
from ml_atlas_sdk.provenance import source_info
from ml_atlas_sdk.reports import as_written
from ml_atlas_sdk.run_record import RunRecord, error_curve, run_metrics
from ml_atlas_sdk.settings import (DEFAULT_EXPERIMENT, DriftSettings, ExportBatch, ExportSettings, RoundtripSettings,
                                   Settings, Tolerance)
from ml_atlas_sdk.settings_errors import describe_errors
from ml_atlas_sdk.steps.canonical import canonical_outputs
from ml_atlas_sdk.steps.drift import drift_step
from ml_atlas_sdk.steps.export import export_model, require_exported_model
from ml_atlas_sdk.steps.invariance import invariance_step
from ml_atlas_sdk.steps.precision import precision_step
from ml_atlas_sdk.steps.roundtrip import roundtrip_model
from ml_atlas_sdk.steps.tensorize import tensorize
from ml_atlas_sdk.steps.upload import build_bundle, publish


class AtlasArtifactBundle(BaseModel):
    """Everything one push needs, validated when it is built."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: torch.nn.Module
    metadata: ModelMetadata
    val_inputs_df: pd.DataFrame
    val_outputs_df: pd.DataFrame | None = None
    calibration_inputs_df: pd.DataFrame | None = None
    export_batch_size: ExportBatch = ExportSettings().batch_size
    architecture_doc: str | Path | None = "auto"
    skip_sdk_validations: bool | set[str] | frozenset[str] | list[str] = False
    drift_tolerance_mse: Tolerance = DriftSettings().tolerance_mse
    drift_tolerance_max_abs: Tolerance = DriftSettings().tolerance_max_abs
    roundtrip_rtol: Tolerance = RoundtripSettings().rtol
    roundtrip_atol: Tolerance = RoundtripSettings().atol
    roundtrip_max_nrmse: Tolerance = RoundtripSettings().max_nrmse
    roundtrip_tolerances: dict[str, dict[str, Any]] | None = None  # {output: {rtol, atol, max_nrmse}}
    axis_sizes: dict[str, list[int]] | None = None  # {axis name: sizes atlas will serve}
    bundle_schema_version: StrictStr = Settings.model_fields["bundle_schema_version"].default

    @field_validator("skip_sdk_validations")
    @classmethod
    def _known_checks(cls, value):
        try:
            SkipPolicy(value, "")
        except AtlasInputError as exc:  # named by the field's own error line
            raise ValueError(str(exc).removeprefix(": ")) from None
        return value

    def __init__(self, **data: Any):
        try:
            with in_schema():  # a metadata dict's errors named `metadata.<field>`, as in the pipeline
                super().__init__(**data)
        except ValidationError as exc:
            raise AtlasInputError(describe_errors(exc, AtlasArtifactBundle, "AtlasArtifactBundle")) from None


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

    settings = settings_of(bundle, tracking_uri=tracking_uri, experiment=experiment, register_model=register_model)
    tracking_uri = tracking_uri or mlflow.get_tracking_uri()  # the caller's environment, not a setting
    run_id = run if isinstance(run, str) or run is None else run.info.run_id
    experiment = experiment or _experiment_of(run_id, tracking_uri) or settings.mlflow.experiment
    mlflow_settings = settings.mlflow.model_copy(update={"tracking_uri": tracking_uri, "experiment": experiment,
                                                         "run_id": run_id})
    with tempfile.TemporaryDirectory(prefix="atlas-sdk-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        built = build_in_process(bundle, work, settings)
        pushed = publish(built, mlflow_settings.model_dump(),
                         on_file=lambda name, done, total: print(f"  uploaded {done}/{total} {name}", flush=True))
    print(f"[atlas] {'reused complete run' if pushed.reused else 'pushed run'} {pushed.run_id}", flush=True)
    return pushed.run_id


# Where each SDK argument sits in the settings, so an error names the argument the user typed.
SDK_ARGUMENTS = {
    "export.batch_size": "export_batch_size", "drift.tolerance_mse": "drift_tolerance_mse",
    "drift.tolerance_max_abs": "drift_tolerance_max_abs", "checks.skip": "skip_sdk_validations",
    "archdoc.source": "architecture_doc", "mlflow.tracking_uri": "tracking_uri", "mlflow.experiment": "experiment",
    "mlflow.register_model": "register_model", "bundle_schema_version": "bundle_schema_version",
    "roundtrip.rtol": "roundtrip_rtol", "roundtrip.atol": "roundtrip_atol", "roundtrip.max_nrmse": "roundtrip_max_nrmse",
    "roundtrip.tolerances": "roundtrip_tolerances", "checks.axis_sizes": "axis_sizes",
}


def settings_of(bundle: AtlasArtifactBundle, *, tracking_uri: str | None = None, experiment: str | None = None,
                register_model: str | None = None) -> Settings:
    """The pipeline's Settings for this bundle: its arguments over the schema's defaults, validated
    by the same rules as params.yaml."""
    skip = bundle.skip_sdk_validations
    doc = bundle.architecture_doc
    raw = {
        "metadata": bundle.metadata,
        "export": {"batch_size": bundle.export_batch_size},
        "drift": {"tolerance_mse": bundle.drift_tolerance_mse, "tolerance_max_abs": bundle.drift_tolerance_max_abs},
        "roundtrip": {"rtol": bundle.roundtrip_rtol, "atol": bundle.roundtrip_atol, "max_nrmse": bundle.roundtrip_max_nrmse,
                      "tolerances": bundle.roundtrip_tolerances or {}},
        "checks": {"skip": skip if isinstance(skip, bool) else sorted(skip), "axis_sizes": bundle.axis_sizes or {}},
        "archdoc": {"source": None if doc is None else str(doc)},
        "mlflow": {"experiment": experiment or DEFAULT_EXPERIMENT, "register_model": register_model,
                   **({"tracking_uri": tracking_uri} if tracking_uri is not None else {})},
        "bundle_schema_version": bundle.bundle_schema_version,
    }
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise AtlasInputError(describe_errors(exc, Settings, names=SDK_ARGUMENTS)) from None


def build_in_process(bundle: AtlasArtifactBundle, work: Path, settings: Settings | None = None) -> BuiltBundle:
    """The pipeline's stages, in the same order, on in-memory objects; returns the built bundle."""
    settings = settings or settings_of(bundle)
    meta = settings.metadata
    skip = settings.checks.policy
    tables = {stem: (tio.frame_to_table(df, sdk_argument(key)), sdk_argument(key)) for key, stem in DATA_FILES.items()
              if (df := getattr(bundle, sdk_argument(key))) is not None}
    tensorized = tensorize(tables, meta, skip, settings.checks.calib_min_rows)
    tensorized.report.stop().print_summary()
    inputs = tensorized.tensors[VAL_INPUTS]
    canonical, canonical_report = canonical_outputs(bundle.model, inputs, meta, skip, settings.roundtrip.batch_size)
    canonical_report.stop().print_summary()
    onnx_path = work / "onnx" / "model.onnx"
    outcome, export_report = export_model(bundle.model, inputs, canonical, settings, onnx_path)
    export_report.stop().print_summary()
    require_exported_model(outcome, "see the attempts printed above")
    roundtrip_report, onnx_outputs = roundtrip_model(onnx_path, inputs, canonical, settings, len(outcome.sample_rows),
                                                     lambda: bundle.model, outcome.chosen.ort_run,
                                                     export_report.extra["hazards"])
    roundtrip_report.stop().print_summary()
    invariance_report = invariance_step(bundle.model, inputs, meta, outcome.chosen.settings, skip, work / "invariance",
                                        (onnx_path, outcome.sample_rows))
    invariance_report.stop().print_summary()
    drift_report = drift_step(tensorized.tensors.get(VAL_OUTPUTS_USER), canonical, settings.drift.tolerance_mse,
                              settings.drift.tolerance_max_abs, skip)
    drift_report.stop().print_summary()
    precision_report = precision_step(bundle.model, inputs, canonical, tensorized.tensors.get(CALIBRATION_INPUTS), meta,
                                      settings.precision, skip, settings.roundtrip.batch_size)
    precision_report.stop().print_summary()
    reports = {r.stage: r for r in (tensorized.report, canonical_report, export_report, roundtrip_report,
                                    invariance_report, drift_report, precision_report)}
    results = tuple(as_written([c for stage in STAGE_ORDER for c in reports[stage].checks]))
    doc = build_architecture_doc(model_summary(bundle.model), onnx_path, meta, settings.archdoc.source, settings.archdoc.llm_model,
                                 settings.archdoc.cache_dir)
    tensor_files = {tensor_file(stem): tio.save_tensors(tensors, work / "tensors" / tensor_file(stem))
                    for stem, tensors in {**tensorized.tensors, VAL_OUTPUTS: canonical}.items()}
    user_outputs = tensorized.tensors.get(VAL_OUTPUTS_USER, {})
    curves = {"roundtrip": {n: error_curve(onnx_outputs.get(n), ref) for n, ref in canonical.items()},
              "drift": {n: error_curve(user_outputs.get(n), ref) for n, ref in canonical.items()}}
    record = RunRecord(run_metrics({stage: report.to_dict() for stage, report in reports.items()}), curves)
    inputs_of_bundle = BundleInputs(
        onnx_path, tensor_files, doc.markdown, meta, export_report.extra["settings_used"], results,
        source_info(),  # no DVC_STAGE here, so no dvc.lock hash
        settings.bundle_schema_version, record, precision_report.extra[HINTS],
    )
    return build_bundle(inputs_of_bundle, work / "bundle" / BUNDLE_DIR_NAME)


def _experiment_of(run_id: str | None, tracking_uri: str) -> str | None:
    if run_id is None:
        return None
    from mlflow.tracking import MlflowClient

    from ml_atlas_sdk.mlflow_store import mlflow_env

    with mlflow_env():  # bounded retries on a dead server, as in the push itself
        client = MlflowClient(tracking_uri=tracking_uri)
        return client.get_experiment(client.get_run(run_id).info.experiment_id).name

