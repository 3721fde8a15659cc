"""The consumer side: download a pushed bundle and trust nothing until it is re-checked."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from ml_atlas_sdk import defaults
from ml_atlas_sdk import roundtrip as rt
from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, MANIFEST, METADATA, bundle_sha256
from ml_atlas_sdk.checks.onnx_checks import model_opset
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.mlflow_store import COMPLETE_TAG, SHA_TAG, client_for, redact_uri
from ml_atlas_sdk.provenance import file_sha256

# verify prints one line per problem on stderr; MLflow's download bar would interleave with them.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_BUNDLE_ONLY_KEYS = ("export", "versions", "source", "bundle_schema_version")
_TENSOR_DTYPES = (torch.float32, torch.int64, torch.bool)


@dataclass(frozen=True)
class ResolvedBundle:
    run_id: str
    path: Path  # the local atlas/ folder
    bundle_sha256: str
    metadata: ModelMetadata


def verify(run_id: str, tracking_uri: str | None = None) -> list[str]:
    """Every problem with what the store holds now for `run_id`, one line each ([] = good)."""
    try:
        sha = _complete_sha(run_id, tracking_uri)
        with tempfile.TemporaryDirectory(prefix="atlas-verify-") as tmp:
            local = _download(run_id, tracking_uri, Path(tmp))
            problems = check_bundle_dir(local)
            manifest = _read_json(local / MANIFEST)
            if manifest and manifest.get("bundle_sha256") != sha:
                problems.append(f"{MANIFEST}: bundle_sha256 differs from the run's {SHA_TAG} tag")
            return problems
    except AtlasBundleError as exc:
        return [str(exc)]


def resolve(run_id: str, tracking_uri: str | None = None, cache_dir: str | Path | None = None) -> ResolvedBundle:
    """A verified local copy of the bundle, cached by bundle_sha256; works offline from the cache.

    The manifest is re-checked on every cache hit, so a corrupted cache is never returned.
    """
    cache = Path(cache_dir) if cache_dir else _default_cache()
    index = cache / "runs" / run_id
    try:
        sha = _complete_sha(run_id, tracking_uri)
    except AtlasBundleError as online_error:
        if not index.is_file():
            raise
        sha = index.read_text().strip()  # offline: trust the cache only after the manifest re-check
        if _manifest_problems(cache / sha / BUNDLE_DIR_NAME):
            raise online_error from None
    target = cache / sha / BUNDLE_DIR_NAME
    if not target.is_dir() or _manifest_problems(target):
        with tempfile.TemporaryDirectory(prefix="atlas-resolve-") as tmp:
            local = _download(run_id, tracking_uri, Path(tmp))
            problems = check_bundle_dir(local)
            if problems:
                raise AtlasBundleError(f"run {run_id}: " + "; ".join(problems))
            shutil.rmtree(target.parent, ignore_errors=True)
            target.parent.mkdir(parents=True)
            shutil.move(str(local), target)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(sha)
    return ResolvedBundle(run_id, target, sha, _metadata(target))


def check_bundle_dir(bundle: Path) -> list[str]:
    problems = _manifest_problems(bundle)
    if problems:
        return problems  # nothing else is worth reading from a bundle that does not match its manifest
    try:
        meta = _metadata(bundle)
    except Exception as exc:
        return [f"{METADATA}: {str(exc).splitlines()[0]}"]
    problems += _onnx_problems(bundle, meta)
    inputs, outputs = _load(bundle / "val_inputs.pt", problems), _load(bundle / "val_outputs.pt", problems)
    if inputs is None or outputs is None:
        return problems
    problems += _tensor_problems("val_inputs.pt", inputs, meta.input_names, meta.input_shapes)
    problems += _tensor_problems("val_outputs.pt", outputs, meta.output_names, meta.output_shape)
    if not problems:
        problems += _ort_problems(bundle, meta, inputs, outputs)
    return problems


def _manifest_problems(bundle: Path) -> list[str]:
    manifest = _read_json(bundle / MANIFEST)
    if not manifest:
        return [f"{MANIFEST}: missing or unreadable"]
    problems = []
    files = manifest.get("files", {})
    for name, entry in sorted(files.items()):
        path = bundle / name
        if not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
        elif path.stat().st_size != entry["size"] or file_sha256(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 or size differs from the manifest")
    extra = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()) 
    for name in extra:
        if name != MANIFEST and name not in files:
            problems.append(f"{name}: present but not in the manifest")
    if bundle_sha256(files) != manifest.get("bundle_sha256"):
        problems.append(f"{MANIFEST}: bundle_sha256 does not match its file list")
    return problems


def _metadata(bundle: Path) -> ModelMetadata:
    raw = json.loads((bundle / METADATA).read_text())
    fields = {k: v for k, v in raw.items() if k not in _BUNDLE_ONLY_KEYS}
    return ModelMetadata.model_validate(fields)


def _onnx_problems(bundle: Path, meta: ModelMetadata) -> list[str]:
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    problems = []
    if [i.name for i in inputs] != meta.input_names:
        problems.append(f"model.onnx: inputs {[i.name for i in inputs]} differ from metadata {meta.input_names}")
    if [o.name for o in model.graph.output] != meta.output_names:
        problems.append(f"model.onnx: outputs {[o.name for o in model.graph.output]} differ from metadata {meta.output_names}")
    for value in [*inputs, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            problems.append(f"model.onnx: {value.name!r} has no dynamic batch axis (axis 0)")
    if model_opset(model) < meta.onnx_opset:
        problems.append(f"model.onnx: opset {model_opset(model)} is below metadata.onnx_opset {meta.onnx_opset}")
    return problems


def _tensor_problems(file: str, tensors: Any, names: list[str], shapes: dict[str, list[int]]) -> list[str]:
    if not isinstance(tensors, dict) or list(tensors) != list(names):
        return [f"{file}: keys {list(tensors) if isinstance(tensors, dict) else type(tensors).__name__} differ from {names}"]
    problems, rows = [], {t.shape[0] for t in tensors.values()}
    if len(rows) != 1:
        problems.append(f"{file}: tensors disagree on the row count {sorted(rows)}")
    for name, t in tensors.items():
        want = shapes[name]
        if t.dtype not in _TENSOR_DTYPES:
            problems.append(f"{file}: {name!r} has dtype {t.dtype}, expected float32, int64 or bool")
        if t.dim() != len(want) or any(w != -1 and w != g for w, g in zip(want[1:], t.shape[1:])):
            problems.append(f"{file}: {name!r} shape {list(t.shape)} does not fit metadata {want}")
    return problems


def _ort_problems(bundle: Path, meta: ModelMetadata, inputs: dict, outputs: dict) -> list[str]:
    tol = rt.Tolerance(defaults.ROUNDTRIP_RTOL, defaults.ROUNDTRIP_ATOL)
    try:
        session = rt.cpu_session(bundle / "model.onnx")
        actual = rt.run_onnx(session, inputs, meta.input_names, meta.output_names, defaults.ROWS_PER_RUN)
    except Exception as exc:  # ORT's own error types
        return [f"model.onnx: onnxruntime failed: {str(exc).splitlines()[0]}"]
    return [
        f"model.onnx: output {name!r} differs from val_outputs.pt ({m['frac_out_of_tol']:.2%} of elements out of tolerance)"
        for name, m in rt.compare(actual, outputs, tol).items() if m["frac_out_of_tol"] > 0
    ]


def _load(path: Path, problems: list[str]):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        problems.append(f"{path.name}: cannot be loaded with weights_only=True ({str(exc).splitlines()[0]})")
        return None


def _complete_sha(run_id: str, tracking_uri: str | None) -> str:
    uri = tracking_uri or _default_uri()
    try:
        run = client_for(uri).get_run(run_id)
    except Exception as exc:
        raise AtlasBundleError(f"run {run_id}: cannot be read from {redact_uri(uri)} ({str(exc).splitlines()[0][:200]})") from None
    tags = run.data.tags
    if tags.get(COMPLETE_TAG) != "true" or not tags.get(SHA_TAG):
        raise AtlasBundleError(f"run {run_id}: incomplete bundle ({COMPLETE_TAG} is not 'true'); refusing it")
    return tags[SHA_TAG]


def _download(run_id: str, tracking_uri: str | None, dest: Path) -> Path:
    uri = tracking_uri or _default_uri()
    try:
        return Path(client_for(uri).download_artifacts(run_id, BUNDLE_DIR_NAME, str(dest)))
    except Exception as exc:
        raise AtlasBundleError(f"run {run_id}: downloading {BUNDLE_DIR_NAME}/ failed ({str(exc).splitlines()[0][:200]})") from None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _default_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ml-atlas-sdk" / "bundles"
