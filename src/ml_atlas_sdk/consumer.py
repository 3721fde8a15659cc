"""The consumer side: download a pushed bundle and trust nothing until it is re-checked."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from ml_atlas_sdk import roundtrip as rt
from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, MANIFEST, METADATA, bundle_sha256
from ml_atlas_sdk.checks.onnx_checks import graph_input_dtypes, model_opset
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.mlflow_store import COMPLETE_TAG, SHA_TAG, client_for
from ml_atlas_sdk.provenance import file_sha256
from ml_atlas_sdk.secrets import first_line, redact_uri, scrub
from ml_atlas_sdk.settings import RoundtripSettings

# verify prints one line per problem on stderr; MLflow's download bar would interleave with them.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_BUNDLE_ONLY_KEYS = ("export", "versions", "source", "bundle_schema_version")
_DEFAULT_DTYPES = ("float32", "int64", "bool")  # the dtype policy without metadata.input_dtypes
_REQUIRED = ("model.onnx", METADATA, "val_inputs.pt", "val_outputs.pt", "validation_report.json")
_SHA = re.compile(r"[0-9a-f]{64}")  # also keeps a forged tag from naming a path outside the cache
ROUNDTRIP = RoundtripSettings()  # the pipeline's default tolerances and rows per ORT run


@dataclass(frozen=True)
class ResolvedBundle:
    run_id: str
    path: Path  # the local atlas/ folder
    bundle_sha256: str
    metadata: ModelMetadata


def verify(run_id: str, tracking_uri: str | None = None) -> list[str]:
    """Every problem with what the store holds now for `run_id`, one line each ([] = good)."""
    uri = tracking_uri or _default_uri()
    try:
        sha = _complete_sha(run_id, uri)
        with tempfile.TemporaryDirectory(prefix="atlas-verify-") as tmp:
            local = _download(run_id, uri, Path(tmp))
            problems = check_bundle_dir(local)
            return problems + _sha_problems(local, sha)
    except AtlasBundleError as exc:
        return [scrub(str(exc), uri)]


def resolve(run_id: str, tracking_uri: str | None = None, cache_dir: str | Path | None = None) -> ResolvedBundle:
    """A verified local copy of the bundle, cached by bundle_sha256; works offline from the cache.

    On every cache hit the folder must match its manifest, and the manifest's bundle_sha256 must
    equal the run's tag and the folder's name: a cache swapped for another self-consistent bundle
    is downloaded again (online) or refused (offline), never returned.
    """
    uri = tracking_uri or _default_uri()
    cache = Path(cache_dir) if cache_dir else _default_cache()
    index = cache / "runs" / run_id
    try:
        sha = _complete_sha(run_id, uri)
        online = True
    except _Unreachable as online_error:
        # Offline: the index names the sha; the folder must still prove it holds that bundle.
        sha = index.read_text().strip() if index.is_file() else ""
        if not _SHA.fullmatch(sha):
            raise
        problems = _cache_problems(cache / sha / BUNDLE_DIR_NAME, sha)
        if problems:
            raise AtlasBundleError(f"{online_error}; the cached copy is unusable: {problems[0]}") from None
        online = False
    target = cache / sha / BUNDLE_DIR_NAME
    if online and _cache_problems(target, sha):
        with tempfile.TemporaryDirectory(prefix="atlas-resolve-") as tmp:
            local = _download(run_id, uri, Path(tmp))
            problems = check_bundle_dir(local) or _sha_problems(local, sha)
            if problems:
                raise AtlasBundleError(scrub(f"run {run_id}: " + "; ".join(problems), uri))
            shutil.rmtree(target.parent, ignore_errors=True)
            target.parent.mkdir(parents=True)
            shutil.move(str(local), target)
        problems = _cache_problems(target, sha)  # what now lies in the cache, not what was downloaded
        if problems:
            raise AtlasBundleError(f"run {run_id}: cached copy {target}: {problems[0]}")
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(sha)
    return ResolvedBundle(run_id, target, sha, _metadata(target))


def check_bundle_dir(bundle: Path) -> list[str]:
    problems = _manifest_problems(bundle)
    if problems:
        return problems  # nothing else is worth reading from a bundle that does not match its manifest
    listed = _read_json(bundle / MANIFEST)["files"]
    missing = [f"{name}: required but not in the manifest" for name in _REQUIRED if name not in listed]
    if missing:
        return missing
    try:
        meta = _metadata(bundle)
    except Exception as exc:
        return [f"{METADATA}: {first_line(exc)}"]
    problems += _onnx_problems(bundle, meta)
    inputs, outputs = _load(bundle / "val_inputs.pt", problems), _load(bundle / "val_outputs.pt", problems)
    if inputs is None or outputs is None:
        return problems
    problems += _tensor_problems("val_inputs.pt", inputs, meta.input_names, meta.input_shapes, meta.dtype_of)
    problems += _tensor_problems("val_outputs.pt", outputs, meta.output_names, meta.output_shape, {})
    if not problems:
        problems += _graph_dtype_problems(bundle, inputs)
    if not problems:
        problems += _ort_problems(bundle, meta, inputs, outputs)
    return problems


def _manifest_problems(bundle: Path) -> list[str]:
    manifest = _read_json(bundle / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return [f"{MANIFEST}: missing, unreadable or without a files table"]
    problems = [f"{name}: {why}" for name in sorted(files) if (why := _bad_name(name))]
    if problems:
        return problems  # never open a path the manifest points outside the bundle
    for name, entry in sorted(files.items()):
        path = bundle / name
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str):
            problems.append(f"{name}: manifest entry lacks an integer size and a sha256")
        elif not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
        elif path.stat().st_size != entry["size"] or file_sha256(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 or size differs from the manifest")
    extra = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() or p.is_symlink())
    for name in extra:
        if name != MANIFEST and name not in files:
            problems.append(f"{name}: present but not in the manifest")
    if bundle_sha256(files) != manifest.get("bundle_sha256"):
        problems.append(f"{MANIFEST}: bundle_sha256 does not match its file list")
    return problems


def _bad_name(name: str) -> str | None:
    """Why a manifest name is not a plain relative path inside the bundle (None if it is)."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or ":" in name or "\0" in name:
        return "not a plain relative name inside the bundle (no leading /, backslash, drive or NUL)"
    if any(part in ("", ".", "..") for part in parts):
        return "not a plain relative name inside the bundle (no empty, . or .. parts)"
    if name == MANIFEST:
        return "the manifest cannot list itself"
    return None


def _sha_problems(bundle: Path, sha: str) -> list[str]:
    manifest = _read_json(bundle / MANIFEST)
    found = manifest.get("bundle_sha256") if isinstance(manifest, dict) else None
    if found != sha:
        return [f"{MANIFEST}: bundle_sha256 {str(found)[:12]}... differs from the run's {SHA_TAG} tag {sha[:12]}..."]
    return []


def _cache_problems(target: Path, sha: str) -> list[str]:
    """Why a cached folder cannot be returned for `sha` ([] = usable)."""
    if not target.is_dir():
        return ["not cached"]
    folder = target.resolve().parent.name  # resolved: a symlink to another bundle's folder is caught
    if folder != sha:
        return [f"folder {folder} is not named by the bundle_sha256 {sha}"]
    return _manifest_problems(target) or _sha_problems(target, sha)


def _metadata(bundle: Path) -> ModelMetadata:
    raw = json.loads((bundle / METADATA).read_text())
    fields = {k: v for k, v in raw.items() if k not in _BUNDLE_ONLY_KEYS}
    return ModelMetadata.model_validate(fields)


def _onnx_problems(bundle: Path, meta: ModelMetadata) -> list[str]:
    try:
        model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    except Exception as exc:  # protobuf's decode errors have no common base worth naming
        return [f"model.onnx: not a readable ONNX model ({first_line(exc)})"]
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


def _tensor_problems(file: str, tensors: Any, names: list[str], shapes: dict[str, list[int]],
                     declared: dict[str, str]) -> list[str]:
    if not isinstance(tensors, dict) or list(tensors) != list(names):
        return [f"{file}: keys {list(tensors) if isinstance(tensors, dict) else type(tensors).__name__} differ from {names}"]
    problems, rows = [], {t.shape[0] for t in tensors.values()}
    if len(rows) != 1:
        problems.append(f"{file}: tensors disagree on the row count {sorted(rows)}")
    for name, t in tensors.items():
        want = shapes[name]
        dtype, allowed = _dtype_name(t), ((declared[name],) if name in declared else _DEFAULT_DTYPES)
        if dtype not in allowed:
            problems.append(f"{file}: {name!r} has dtype {dtype}, expected {' or '.join(allowed)}")
        if t.dim() != len(want) or any(w != -1 and w != g for w, g in zip(want[1:], t.shape[1:])):
            problems.append(f"{file}: {name!r} shape {list(t.shape)} does not fit metadata {want}")
    return problems


def _graph_dtype_problems(bundle: Path, inputs: dict[str, torch.Tensor]) -> list[str]:
    """ONNX Runtime gets val_inputs.pt as it is, so the graph must declare the same dtypes."""
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    graph = graph_input_dtypes(i for i in model.graph.input if i.name not in init)
    return [f"model.onnx: input {name!r} is {graph[name]} but val_inputs.pt holds {_dtype_name(t)}"
            for name, t in inputs.items() if name in graph and graph[name] != _dtype_name(t)]


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _ort_problems(bundle: Path, meta: ModelMetadata, inputs: dict, outputs: dict) -> list[str]:
    tol = ROUNDTRIP.tolerance
    try:
        session = rt.cpu_session(bundle / "model.onnx")
        actual = rt.run_onnx(session, inputs, meta.input_names, meta.output_names, ROUNDTRIP.batch_size)
    except Exception as exc:  # ORT's own error types
        return [f"model.onnx: onnxruntime failed: {first_line(exc)}"]
    # The same comparison as the roundtrip check, so NaN/Inf that one side lacks is never "verified".
    return [f"model.onnx: output {line}" for line in rt.problems(rt.compare(actual, outputs, tol), "ONNX", "val_outputs.pt")]


def _load(path: Path, problems: list[str]):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        problems.append(f"{path.name}: cannot be loaded with weights_only=True ({first_line(exc)})")
        return None


class _Unreachable(AtlasBundleError):
    """The store could not be asked; resolve may fall back to its cache (a refusal never does)."""


def _complete_sha(run_id: str, uri: str) -> str:
    """The run's bundle_sha256, if the run is FINISHED with a complete bundle; else one-line refusal."""
    try:
        run = client_for(uri).get_run(run_id)
    except Exception as exc:
        error = _Unreachable if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST" else AtlasBundleError
        raise error(f"run {run_id}: cannot be read from {redact_uri(uri)} ({first_line(exc, uri, limit=200)})") from None
    tags = run.data.tags
    if run.info.status != "FINISHED":
        raise AtlasBundleError(f"run {run_id}: status is {run.info.status}, not FINISHED; refusing it")
    if tags.get(COMPLETE_TAG) != "true":
        raise AtlasBundleError(f"run {run_id}: incomplete bundle ({COMPLETE_TAG} is not 'true'); refusing it")
    sha = tags.get(SHA_TAG, "")
    if not _SHA.fullmatch(sha):
        raise AtlasBundleError(f"run {run_id}: no valid {SHA_TAG} tag (64 hex digits), got {sha[:70]!r}; refusing it")
    return sha


def _download(run_id: str, uri: str, dest: Path) -> Path:
    try:
        return Path(client_for(uri).download_artifacts(run_id, BUNDLE_DIR_NAME, str(dest)))
    except Exception as exc:
        raise AtlasBundleError(f"run {run_id}: downloading {BUNDLE_DIR_NAME}/ failed ({first_line(exc, uri, limit=200)})") from None


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
