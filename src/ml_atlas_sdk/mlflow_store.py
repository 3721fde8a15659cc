"""Push a bundle to MLflow with an explicit MlflowClient (no global MLflow state)."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, MANIFEST, Manifest, build_manifest
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.secrets import redact_uri, scrub, scrubbed_stdout  # noqa: F401 (re-exported)

COMPLETE_TAG = "atlas.bundle_complete"
SHA_TAG = "atlas.bundle_sha256"
RETRIES = 3
T = TypeVar("T")

# MLflow's own HTTP retry defaults wait minutes on a dead server; keep a user's explicit choice.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


@dataclass(frozen=True)
class PushResult:
    run_id: str
    experiment: str
    experiment_id: str
    reused: bool


def client_for(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def with_retries(what: str, fn: Callable[[], T], tracking_uri: str, retries: int = RETRIES) -> T:
    """Bounded retries for transient tracking errors; then one clear error naming the server."""
    for attempt in range(1, retries + 1):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps transport errors in several exception types
            if attempt == retries or not _transient(exc):
                raise AtlasBundleError(
                    f"mlflow.tracking_uri {redact_uri(tracking_uri)}: {what} failed after {attempt} attempt(s): "
                    f"{scrub(_one_line(exc), tracking_uri)}"
                ) from None
            time.sleep(min(2**attempt, 10))
    raise AssertionError("unreachable")


def push_bundle(
    bundle_dir: Path,
    manifest: Manifest,
    params: dict[str, Any],
    tags: dict[str, str],
    tracking_uri: str,
    experiment: str,
    run_id: str | None = None,
    run_name: str | None = None,
    on_file: Callable[[str, int, int], None] = lambda name, done, total: None,
    before_complete: Callable[[Any, str], None] = lambda client, run_id: None,
) -> PushResult:
    """Upload every bundle file under `atlas/`, then tags, then `atlas.bundle_complete` last.

    A bundle whose sha is already complete in the experiment reuses that run. Any failure after
    the run exists marks it FAILED; `bundle_complete` is never set on a partial upload.
    `before_complete(client, run_id)` adds more to the run (the MLflow model) before that tag.
    """
    if build_manifest(bundle_dir).bundle_sha256 != manifest.bundle_sha256:
        raise AtlasBundleError(f"{bundle_dir}: files changed since the manifest was written; assemble the bundle again")
    client = client_for(tracking_uri)
    experiment_id = with_retries("getting the experiment", lambda: _experiment_id(client, experiment, tracking_uri), tracking_uri)
    existing = with_retries("searching for an identical bundle", lambda: _complete_run(client, experiment_id, manifest.bundle_sha256), tracking_uri)
    if existing and run_id is None:
        return PushResult(existing, experiment, experiment_id, reused=True)
    if run_id is None:
        run = with_retries("creating the run", lambda: client.create_run(experiment_id, run_name=run_name), tracking_uri)
        run_id = run.info.run_id
    try:
        _upload(client, run_id, bundle_dir, manifest, params, tags, on_file, before_complete)
    except BaseException:
        # Best effort: the original error matters more than a failure to mark the run.
        try:
            with scrubbed_stdout(tracking_uri):  # MLflow prints "View run ... at: <URI>" here
                client.set_terminated(run_id, status="FAILED")
        except Exception:
            pass
        raise
    return PushResult(run_id, experiment, experiment_id, reused=False)


def _upload(client, run_id, bundle_dir, manifest, params, tags, on_file, before_complete) -> None:
    from mlflow.entities import Param, RunTag

    names = [*sorted(manifest.files), MANIFEST]  # the manifest last: a reader trusts it only if it exists
    for done, name in enumerate(names, start=1):
        artifact_dir = f"{BUNDLE_DIR_NAME}/{Path(name).parent.as_posix()}".rstrip("/.")
        with_retries(f"uploading {name}", lambda n=name, d=artifact_dir: client.log_artifact(run_id, str(bundle_dir / n), d), client.tracking_uri)
        on_file(name, done, len(names))
    param_list = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
    tag_list = [RunTag(k, str(v)) for k, v in sorted(tags.items()) if k != COMPLETE_TAG]
    with_retries("logging params and tags", lambda: client.log_batch(run_id, params=param_list, tags=tag_list), client.tracking_uri)
    before_complete(client, run_id)
    with_retries("marking the bundle complete", lambda: client.set_tag(run_id, COMPLETE_TAG, "true"), client.tracking_uri)
    with scrubbed_stdout(client.tracking_uri):  # MLflow prints "View run ... at: <URI>" here
        with_retries("finishing the run", lambda: client.set_terminated(run_id, status="FINISHED"), client.tracking_uri)


def _experiment_id(client, name: str, tracking_uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:"):
        # The embedded default keeps artifacts beside the database, in ./mlartifacts (SPEC).
        artifact_location = (Path.cwd() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def _complete_run(client, experiment_id: str, sha: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SHA_TAG}` = '{sha}' and tags.`{COMPLETE_TAG}` = 'true'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:6000]  # MLflow's param value limit


def _transient(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("connection", "timeout", "timed out", "temporarily", "503", "502", "504", "429", "max retries"))


def _one_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
