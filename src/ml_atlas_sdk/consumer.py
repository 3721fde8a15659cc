"""The consumer side: download a pushed bundle and trust nothing until it is re-checked.

The re-checks are the producer's own check functions (onnx_cross_check, df_shape_dtype, roundtrip),
their Findings turned into one line per problem: a rule changes in one place for both sides.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from ml_atlas_sdk import axis_probe
from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, MANIFEST, METADATA, VALIDATION_REPORT, bundle_sha256
from ml_atlas_sdk.checks.data_checks import df_shape_dtype
from ml_atlas_sdk.checks.onnx_checks import onnx_cross_check
from ml_atlas_sdk.checks.result import Finding
from ml_atlas_sdk.checks.roundtrip import roundtrip
from ml_atlas_sdk.compare import Tolerance
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.metadata import BundleMetadata, format_validation_error
from ml_atlas_sdk.mlflow_store import COMPLETE_TAG, SHA_TAG, mlflow_env
from ml_atlas_sdk.provenance import file_sha256
from ml_atlas_sdk.read_store import default_tracking_uri
from ml_atlas_sdk.read_store import reader_client as client_for  # reading never creates a store
from ml_atlas_sdk.secrets import first_line, redact_uri, scrub
from ml_atlas_sdk.settings import RoundtripSettings

_REQUIRED = ("model.onnx", METADATA, "val_inputs.pt", "val_outputs.pt", VALIDATION_REPORT)
# verify prints one line per problem on stderr; MLflow's download bar would interleave with them.
_QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
_SHA = re.compile(r"[0-9a-f]{64}")  # also keeps a forged tag from naming a path outside the cache
_RUNS = "runs"  # <cache>/<sha>/runs/<run_id>: the runs verified online to hold that bundle
ROUNDTRIP = RoundtripSettings()  # the pipeline's default tolerances and rows per ORT run


@dataclass(frozen=True)
class ResolvedBundle:
    run_id: str
    path: Path  # the local atlas/ folder
    bundle_sha256: str
    metadata: BundleMetadata


@mlflow_env(**_QUIET)
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


@mlflow_env(**_QUIET)
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
        # The index alone is one rewritable line: the bundle's folder must also record that this
        # run was verified online to hold it (written beside atlas/ below), or it is not returned.
        problems = _cache_problems(cache / sha / BUNDLE_DIR_NAME, sha) or _run_record_problems(cache / sha, run_id)
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
    if online:
        (target.parent / _RUNS).mkdir(exist_ok=True)
        (target.parent / _RUNS / run_id).write_text(sha)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(sha)
    return ResolvedBundle(run_id, target, sha, _metadata(target))


def _run_record_problems(folder: Path, run_id: str) -> list[str]:
    record = folder / _RUNS / run_id
    if record.is_file() and record.read_text().strip() == folder.name:
        return []
    return [f"the cache index names bundle {folder.name[:12]}..., which was never verified online as run {run_id}'s"]


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
    except ValidationError as exc:
        return [format_validation_error(exc, METADATA)]
    except Exception as exc:
        return [f"{METADATA}: {first_line(exc)}"]
    inputs, outputs = _load(bundle / "val_inputs.pt", problems), _load(bundle / "val_outputs.pt", problems)
    loaded, tensor_problems = inputs is not None and outputs is not None, []
    if loaded:
        tensor_problems += _tensor_problems("val_inputs.pt", inputs, meta.input_names, meta.input_shapes, meta.dtype_of)
        tensor_problems += _tensor_problems("val_outputs.pt", outputs, meta.output_names, meta.output_shape, {})
    # Graph dtypes are compared with val_inputs.pt only once that file itself fits the metadata.
    val_inputs = inputs if loaded and not tensor_problems else None
    onnx_problems = _lines("model.onnx: {}", onnx_cross_check(bundle / "model.onnx", meta, meta.onnx_opset, val_inputs))
    problems = onnx_problems + problems + tensor_problems
    if not problems:
        problems += _ort_problems(bundle, meta, inputs, outputs)
    return problems


def _lines(template: str, finding: Finding) -> list[str]:
    """A failed Finding as verify's lines: one per problem the check listed, each naming its file."""
    if finding.ok is not False:
        return []
    return [template.format(line) for line in finding.details.get("problems") or [finding.message]]


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


def _metadata(bundle: Path) -> BundleMetadata:
    return BundleMetadata.model_validate(json.loads((bundle / METADATA).read_text()))


def _tensor_problems(file: str, tensors: Any, names: list[str], shapes: dict[str, list[int]],
                     declared: dict[str, str]) -> list[str]:
    """The bundle format (keys in order, one row count), then the producer's df_shape_dtype rule."""
    if not isinstance(tensors, dict) or list(tensors) != list(names):
        return [f"{file}: keys {list(tensors) if isinstance(tensors, dict) else type(tensors).__name__} differ from {names}"]
    if not all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in tensors.values()):
        return [f"{file}: every value must be a tensor with a batch axis"]
    problems, rows = [], {t.shape[0] for t in tensors.values()}
    if len(rows) != 1:
        problems.append(f"{file}: tensors disagree on the row count {sorted(rows)}")
    return problems + _lines(file + ": {}", df_shape_dtype(tensors, shapes, declared, file))


def _ort_problems(bundle: Path, meta: BundleMetadata, inputs: dict, outputs: dict) -> list[str]:
    """ORT over the bundle's rows against val_outputs.pt under the tolerances the producer recorded,
    then at the recorded dynamic-axis sizes (no PyTorch model here: ORT must run and the outputs'
    shapes must follow the declared axes)."""
    recorded = meta.validated_under or {}
    tol = {name: Tolerance(**recorded["roundtrip_tolerances"][name]) if name in recorded.get("roundtrip_tolerances", {})
           else ROUNDTRIP.tolerance for name in meta.output_names}
    try:
        session = rt.cpu_session(bundle / "model.onnx")
        actual = rt.run_onnx(session, inputs, meta.input_names, meta.output_names, ROUNDTRIP.batch_size)
    except Exception as exc:  # ORT's own error types
        return [f"model.onnx: onnxruntime failed: {first_line(exc)}"]
    # The roundtrip check itself, so NaN/Inf that one side lacks is never "verified".
    problems = _lines("model.onnx: output {}", roundtrip(rt.compare(actual, outputs, tol), tol, reference="val_outputs.pt"))
    plan = {axis: (sizes, True) for axis, sizes in recorded.get("axis_sizes", {}).items() if axis in meta.probe_axes()}
    numpy_inputs = {name: value.numpy() for name, value in inputs.items()}
    for probe in axis_probe.probe_all(bundle / "model.onnx", meta, numpy_inputs, plan):
        if not probe.ok:
            problems.append(f"model.onnx: {probe.message}")
    return problems


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
    if run.info.lifecycle_stage == "deleted":  # in MLflow's trash, to be purged: no longer a bundle to serve
        raise AtlasBundleError(f"run {run_id}: is deleted (in MLflow's trash); refusing it")
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
    return default_tracking_uri()


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ml-atlas-sdk" / "bundles"
