"""Assemble the bundle, gate it on the checks, and push it to MLflow."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.build import MODEL_ONNX, VAL_INPUTS, VAL_OUTPUTS, BuiltBundle, BundleInputs, tensor_file
from ml_atlas_sdk.bundle import Manifest, assemble_bundle, gate
from ml_atlas_sdk.checks.result import CheckResult, Verdict, worst
from ml_atlas_sdk.metadata import BundleMetadata, ModelMetadata
from ml_atlas_sdk.mlflow_model import log_onnx_model, register
from ml_atlas_sdk.mlflow_store import PushResult, push_bundle, redact_uri
from ml_atlas_sdk.precision.hints import with_onnx_nodes
from ml_atlas_sdk.provenance import versions
from ml_atlas_sdk.reuse_key import COMMITS_TAG
from ml_atlas_sdk.run_record import log_run_record
from ml_atlas_sdk.validated_under import validated_params, validated_under


def metadata_document(meta: ModelMetadata, export_used: dict[str, Any], source: dict[str, Any], schema_version: str,
                      precision_hints: dict[str, list[str]] | None = None,
                      results: tuple[CheckResult, ...] = ()) -> dict[str, Any]:
    return BundleMetadata.document(meta, export_used, versions(), source, schema_version,  # the consumer's schema too
                                   precision_hints, validated_under(results))


def run_params(meta: ModelMetadata, export_used: dict[str, Any], results: tuple[CheckResult, ...] = ()) -> dict[str, Any]:
    return {**meta.model_dump(mode="json"), **{f"export.{k}": v for k, v in export_used.items()},
            **validated_params(validated_under(results))}


def run_tags(meta: ModelMetadata, manifest: Manifest, results: list[CheckResult], source: dict[str, Any], schema_version: str) -> dict[str, str]:
    by_name: dict[str, list[Verdict]] = {}
    for r in results:
        by_name.setdefault(r.name, []).append(r.verdict)
    skipped = sorted(n for n, vs in by_name.items() if all(v is Verdict.SKIPPED for v in vs))
    tags = {
        "atlas.bundle_schema_version": schema_version,
        "atlas.model_name": meta.model_name,
        "atlas.task_type": meta.task_type,
        "atlas.architecture": meta.architecture,
        "atlas.bundle_sha256": manifest.bundle_sha256,
        "atlas.skipped_checks": ",".join(skipped),
        "atlas.git_commit": source.get("git_commit") or "",
        COMMITS_TAG: source.get("git_commit") or "",
        "atlas.git_dirty": str(source.get("git_dirty")).lower(),
        **{f"atlas.check.{n}": worst(vs).value for n, vs in sorted(by_name.items())},
    }
    if source.get("dvc_lock_sha256"):
        tags["atlas.dvc_lock_sha256"] = source["dvc_lock_sha256"]
    return {**source_tags(source), **tags}


def source_tags(source: dict[str, Any]) -> dict[str, str]:
    """MLflow's own source tags (the UI's "Source" column), as MLflow's run context resolves them
    for this process, with the commit the bundle records; a repository URL loses any credentials."""
    from mlflow.tracking.context.registry import resolve_tags

    wanted = ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.branch", "mlflow.source.git.repoURL", "mlflow.user")
    tags = {k: redact_uri(str(v)) for k, v in resolve_tags().items() if k in wanted}
    if source.get("git_commit"):
        tags["mlflow.source.git.commit"] = source["git_commit"]
    return tags


def run_name(model_name: str, manifest: Manifest) -> str:
    """Says what the run holds: runs of one model differ by their bundle's short sha."""
    return f"{model_name}-{manifest.bundle_sha256[:12]}"


def build_bundle(inputs: BundleInputs, out_dir: Path) -> BuiltBundle:
    """Gate first (nothing is written for a refused bundle), then write every file into `out_dir`."""
    gate(inputs.results)
    hints = with_onnx_nodes(inputs.precision_hints, inputs.onnx)
    doc = metadata_document(inputs.metadata, inputs.export_used, inputs.source, inputs.schema_version, hints,
                            inputs.results)
    manifest = assemble_bundle(out_dir, inputs.onnx, inputs.tensor_files, doc, list(inputs.results), inputs.architecture_md)
    return BuiltBundle(out_dir, manifest, inputs.metadata, inputs.export_used, inputs.results, inputs.source,
                       inputs.schema_version, inputs.record)


def publish(
    built: BuiltBundle,
    mlflow_settings: dict[str, Any],
    on_file: Callable[[str, int, int], None] = lambda name, done, total: None,
    say: Callable[[str], None] = lambda message: print(f"[atlas] {message}", flush=True),
) -> PushResult:
    bundle_dir, meta = built.dir, built.metadata

    def add_to_run(client, run_id: str) -> None:
        log_run_record(client, run_id, built.record, list(built.results))
        inputs = tio.load_tensors(bundle_dir / tensor_file(VAL_INPUTS))
        outputs = tio.load_tensors(bundle_dir / tensor_file(VAL_OUTPUTS))
        model_uri = log_onnx_model(client, run_id, bundle_dir / MODEL_ONNX, meta, inputs, outputs)
        if mlflow_settings.get("register_model"):
            version = register(client, mlflow_settings["register_model"], run_id, model_uri)
            print(f"  registered {mlflow_settings['register_model']!r} version {version}", flush=True)

    return push_bundle(
        bundle_dir,
        built.manifest,
        run_params(meta, built.export_used, built.results),
        run_tags(meta, built.manifest, list(built.results), built.source, built.schema_version),
        tracking_uri=mlflow_settings["tracking_uri"],
        experiment=mlflow_settings["experiment"],
        run_id=mlflow_settings.get("run_id"),
        run_name=mlflow_settings.get("run_name") or run_name(meta.model_name, built.manifest),
        on_file=on_file,
        before_complete=add_to_run,
        say=say,
    )
