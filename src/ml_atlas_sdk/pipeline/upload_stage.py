"""DVC stage upload: gate on every check, assemble build/bundle/atlas/, push it to MLflow."""
from __future__ import annotations

from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME
from ml_atlas_sdk.checks.result import CheckResult
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.mlflow_store import redact_uri
from ml_atlas_sdk.pipeline.outputs import forget, replaced_dir, stale_report
from ml_atlas_sdk.pipeline.outputs import read_export_info
from ml_atlas_sdk.pipeline.paths import ARCHDOC, BUNDLE_ROOT, CANONICAL_OUTPUTS, CHECK_STAGES, ONNX_MODEL, TENSORS_DIR
from ml_atlas_sdk.pipeline.summary import summary_table
from ml_atlas_sdk.provenance import source_info
from ml_atlas_sdk.reports import read_report, write_json
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.upload import build_bundle, publish


def run_upload(cfg: Settings) -> None:
    forget(stale_report("upload"), BUNDLE_ROOT)
    meta, mlflow_cfg = cfg.metadata, cfg.mlflow.model_dump()
    results = [CheckResult.from_dict(c) for stage in CHECK_STAGES for c in read_report(stage)["checks"]]
    print(summary_table(results), flush=True)
    export_used = read_export_info()["settings_used"]
    tensor_files = {p.name: p for p in TENSORS_DIR.glob("*.pt") if p.name != "val_outputs.pt"}
    tensor_files["val_outputs.pt"] = CANONICAL_OUTPUTS
    source = source_info()
    schema = cfg.bundle_schema_version
    uri = mlflow_cfg["tracking_uri"]
    report = {"tracking_uri": redact_uri(uri), "experiment": mlflow_cfg["experiment"]}
    try:
        with replaced_dir(BUNDLE_ROOT) as scratch:
            manifest = build_bundle(scratch / BUNDLE_DIR_NAME, ONNX_MODEL, tensor_files, meta, export_used, results,
                                    ARCHDOC.read_text() if ARCHDOC.is_file() else None, source, schema)
    except AtlasBundleError as exc:
        write_json(stale_report("upload"), {**report, "status": "refused", "error": str(exc)})
        raise
    bundle_dir = BUNDLE_ROOT / BUNDLE_DIR_NAME
    report.update(bundle_sha256=manifest.bundle_sha256, files=len(manifest.files) + 1)
    if cfg.upload.dry_run:
        write_json(stale_report("upload"), {**report, "status": "dry_run", "run_id": None})
        print(f"[upload] dry run: bundle {manifest.bundle_sha256[:12]} assembled in {bundle_dir}, nothing pushed", flush=True)
        return
    try:
        pushed = publish(bundle_dir, manifest, meta, export_used, results, source, schema, mlflow_cfg,
                         on_file=lambda name, done, total: print(f"  uploaded {done}/{total} {name}", flush=True),
                         say=lambda message: print(f"[upload] {message}", flush=True))
    except AtlasBundleError as exc:
        write_json(stale_report("upload"), {**report, "status": "failed", "error": str(exc)})
        raise
    write_json(stale_report("upload"), {**report, "status": "reused" if pushed.reused else "pushed", "run_id": pushed.run_id,
                                         "experiment_id": pushed.experiment_id})
    verb = "reused complete run" if pushed.reused else "pushed run"
    print(f"[upload] {verb} {pushed.run_id} (experiment {pushed.experiment!r}, bundle {manifest.bundle_sha256[:12]})", flush=True)
