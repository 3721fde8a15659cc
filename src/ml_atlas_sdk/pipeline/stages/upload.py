"""Stage upload: gate on every check stage's report, assemble build/bundle/atlas/, push it to MLflow."""
from __future__ import annotations

from dataclasses import replace

from ml_atlas_sdk.build import BUNDLE_DIR_NAME, DATA_FILES, STAGE_ORDER, VAL_OUTPUTS, BundleInputs, tensor_file
from ml_atlas_sdk.checks.result import CheckResult
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.local_store import project_tracking_uri
from ml_atlas_sdk.mlflow_store import redact_uri
from ml_atlas_sdk.pipeline import judged
from ml_atlas_sdk.pipeline.outputs import forget, read_export_info, replaced_dir, stale_report
from ml_atlas_sdk.pipeline.paths import ARCHDOC, BUNDLE_ROOT, CANONICAL_OUTPUTS, ONNX_MODEL, PLOTS, TENSORS_DIR
from ml_atlas_sdk.pipeline.plots import read_error_quantiles
from ml_atlas_sdk.pipeline.summary import summary_table
from ml_atlas_sdk.precision.hints import HINTS
from ml_atlas_sdk.provenance import source_info
from ml_atlas_sdk.reports import read_report, write_json
from ml_atlas_sdk.run_record import RunRecord, run_metrics
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.upload import build_bundle, publish


def bundle_inputs(cfg: Settings) -> BundleInputs:
    """What the earlier stages left under build/ and reports/, as the SDK door holds it in memory;
    refused unless every report still describes those files and this upload's settings."""
    reports = {stage: read_report(stage) for stage in STAGE_ORDER}
    project = judged.project_settings(cfg)
    for stage, report in reports.items():
        judged.check(stage, stale_report(stage), report, cfg, project)
    if ARCHDOC.is_file():  # architecture.md is pushed too: archdoc's own record must match it
        judged.check("archdoc", stale_report("archdoc"), read_report("archdoc"), cfg, project)
    results = tuple(CheckResult.from_dict(c) for report in reports.values() for c in report["checks"])
    written = {tensor_file(stem): TENSORS_DIR / tensor_file(stem) for stem in DATA_FILES.values()}
    tensor_files = {name: path for name, path in written.items() if path.is_file()}  # optional data may be absent
    tensor_files[tensor_file(VAL_OUTPUTS)] = CANONICAL_OUTPUTS
    return BundleInputs(ONNX_MODEL, tensor_files, ARCHDOC.read_text() if ARCHDOC.is_file() else None, cfg.metadata,
                        read_export_info()["settings_used"], results, source_info(), cfg.bundle_schema_version,
                        RunRecord(run_metrics(reports), {stage: read_error_quantiles(PLOTS / stage) for stage in ("roundtrip", "drift")}),
                        precision_hints=reports["precision"].get(HINTS))


def run_upload(cfg: Settings) -> None:
    forget(stale_report("upload"), BUNDLE_ROOT)
    mlflow_cfg = cfg.mlflow.model_dump()
    # A relative sqlite store means the project's own, also from DVC's temporary experiment folders.
    mlflow_cfg["tracking_uri"] = project_tracking_uri(mlflow_cfg["tracking_uri"])
    report = {"tracking_uri": redact_uri(mlflow_cfg["tracking_uri"]), "experiment": mlflow_cfg["experiment"]}
    try:
        inputs = bundle_inputs(cfg)
        print(summary_table(list(inputs.results)), flush=True)
        with replaced_dir(BUNDLE_ROOT) as scratch:
            built = build_bundle(inputs, scratch / BUNDLE_DIR_NAME)
    except AtlasBundleError as exc:
        write_json(stale_report("upload"), {**report, "status": "refused", "error": str(exc)})
        raise
    built = replace(built, dir=BUNDLE_ROOT / BUNDLE_DIR_NAME)  # the scratch folder became BUNDLE_ROOT
    digest = built.manifest.bundle_sha256
    report.update(bundle_sha256=digest, files=len(built.manifest.files) + 1)
    if cfg.upload.dry_run:
        write_json(stale_report("upload"), {**report, "status": "dry_run", "run_id": None})
        print(f"[upload] dry run: bundle {digest[:12]} assembled in {built.dir}, nothing pushed", flush=True)
        return
    try:
        pushed = publish(built, mlflow_cfg,
                         on_file=lambda name, done, total: print(f"  uploaded {done}/{total} {name}", flush=True),
                         say=lambda message: print(f"[upload] {message}", flush=True))
    except AtlasBundleError as exc:
        write_json(stale_report("upload"), {**report, "status": "failed", "error": str(exc)})
        raise
    write_json(stale_report("upload"), {**report, "status": "reused" if pushed.reused else "pushed", "run_id": pushed.run_id,
                                         "experiment_id": pushed.experiment_id})
    verb = "reused complete run" if pushed.reused else "pushed run"
    print(f"[upload] {verb} {pushed.run_id} (experiment {pushed.experiment!r}, bundle {digest[:12]})", flush=True)
