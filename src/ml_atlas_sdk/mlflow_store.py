"""Push a bundle to MLflow with an explicit MlflowClient (no global MLflow state)."""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ml_atlas_sdk import local_store
from ml_atlas_sdk import run_claims as claims
from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, MANIFEST, Manifest, build_manifest
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.reuse_key import COMMITS_TAG, CONTENT_TAG, content_sha256, with_commit
from ml_atlas_sdk.run_claims import COMPLETE_TAG, SHA_TAG  # noqa: F401 (re-exported)
from ml_atlas_sdk.run_record import PLOTS_DIR
from ml_atlas_sdk.secrets import first_line, redact_uri, scrub, scrubbed_stdout  # noqa: F401 (re-exported)

MODEL_ARTIFACT_PATH = "model"  # mlflow_model's folder, cleared with atlas/ on a re-upload
RETRIES = 3
T = TypeVar("T")

# MLflow's own HTTP retry defaults wait minutes on a dead server. MLflow reads these per request,
# so they are set only while our calls run (mlflow_env), never at import: importing the SDK must
# not change the environment of the user's own MLflow code.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@contextlib.contextmanager
def mlflow_env(**extra: str) -> Iterator[None]:
    """HTTP_DEFAULTS (and `extra`) for the duration of the block, each only where the user set no
    value of their own; removed afterwards unless something else changed them meanwhile.
    Also a decorator; nested uses leave the outer one's values alone."""
    added = {k: v for k, v in {**HTTP_DEFAULTS, **extra}.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key, value in added.items():
            if os.environ.get(key) == value:
                del os.environ[key]


@dataclass(frozen=True)
class PushResult:
    run_id: str
    experiment: str
    experiment_id: str
    reused: bool


def client_for(tracking_uri: str, say: Callable[[str], None] | None = None):
    from mlflow.tracking import MlflowClient

    db = local_store.db_path(tracking_uri)
    if db is None:
        return MlflowClient(tracking_uri=tracking_uri)
    with local_store.first_use_lock(db):
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)  # creates and migrates a fresh file, under the lock
        for moved in local_store.follow_copy(db):
            if say:
                say(f"this project's {local_store.ARTIFACTS_DIR}/ was copied: {moved}")
    return client


def with_retries(what: str, fn: Callable[[], T], tracking_uri: str, retries: int = RETRIES) -> T:
    """Bounded retries for transient tracking errors; then one clear error naming the server."""
    for attempt in range(1, retries + 1):
        try:
            return fn()
        except AtlasBundleError:
            raise  # already one line naming what is wrong
        except Exception as exc:  # MLflow wraps transport errors in several exception types
            if attempt == retries or not _transient(exc):
                raise AtlasBundleError(
                    f"mlflow.tracking_uri {redact_uri(tracking_uri)}: {what} failed after {attempt} attempt(s): "
                    f"{type(exc).__name__}: {first_line(exc, tracking_uri)}"
                ) from None
            time.sleep(min(2**attempt, 10))
    raise AssertionError("unreachable")


@mlflow_env()
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
    say: Callable[[str], None] = lambda message: print(f"[atlas] {message}", flush=True),
) -> PushResult:
    """Upload every bundle file under `atlas/`, then tags, then `atlas.bundle_complete` last.

    Without `run_id`, a FINISHED run that holds this bundle's content (reuse_key: files, metadata
    without provenance, params) is reused, recording this build's commit on it; else one new run
    wins the claim (run_claims). Into an existing `run_id`, the old complete tag and `atlas/`
    files are removed first. Any failure after the run exists marks it FAILED.
    `before_complete(client, run_id)` adds more to the run (the MLflow model) before that tag.
    """
    if build_manifest(bundle_dir).bundle_sha256 != manifest.bundle_sha256:
        raise AtlasBundleError(f"{bundle_dir}: files changed since the manifest was written; assemble the bundle again")
    manifest_size = (bundle_dir / MANIFEST).stat().st_size
    content = content_sha256(bundle_dir, manifest, params)
    tags = {**tags, CONTENT_TAG: content}
    client = with_retries("opening the tracking store", lambda: client_for(tracking_uri, say), tracking_uri)
    experiment_id = with_retries("getting the experiment", lambda: _experiment_id(client, experiment, tracking_uri), tracking_uri)
    if run_id is None:
        def create(claim: dict[str, str]) -> str:
            return client.create_run(experiment_id, run_name=run_name, tags=claim).info.run_id

        run_id, reused = with_retries("claiming the bundle's run", lambda: claims.claim_or_reuse(
            client, experiment_id, manifest, manifest_size, create, say, content), tracking_uri, retries=1)
        if reused:
            with_retries("recording the commit", lambda: _record_commit(client, run_id, tags.get("atlas.git_commit"), say), tracking_uri)
            return PushResult(run_id, experiment, experiment_id, reused=True)
    else:
        with_retries(f"clearing run {run_id}", lambda: _clear_run(client, run_id, manifest.bundle_sha256, content, params), tracking_uri)
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


def _clear_run(client, run_id: str, sha: str, content: str, params: dict[str, Any]) -> None:
    """Make a given run hold nothing of an earlier bundle before new files go in."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    run = client.get_run(run_id)
    # MLflow params never change: refuse before touching anything rather than fail half-way.
    changed = sorted(k for k, v in params.items() if k in run.data.params and run.data.params[k] != _param_value(v))
    if changed:
        raise AtlasBundleError(f"run {run_id} already has param(s) {', '.join(changed[:5])} with other values, and MLflow "
                               "params cannot change: push to a new run (mlflow.run_id: null)")
    if COMPLETE_TAG in run.data.tags:  # first: a failure below must not leave the old claim
        client.delete_tag(run_id, COMPLETE_TAG)
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    for folder in (BUNDLE_DIR_NAME, MODEL_ARTIFACT_PATH, PLOTS_DIR):
        if client.list_artifacts(run_id, folder):
            repo.delete_artifacts(folder)
    from ml_atlas_sdk.mlflow_model import logged_models_of  # imports this module

    for old in logged_models_of(client, run_id):  # MLflow 3: `runs:/<run>/model` would still find it
        client.delete_logged_model(old.model_id)
    if client.list_artifacts(run_id, BUNDLE_DIR_NAME):
        raise AtlasBundleError(f"run {run_id}: its old {BUNDLE_DIR_NAME}/ files could not be removed; "
                               "push to a new run (mlflow.run_id: null)")
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in claims.claim_tags(sha, content).items()])
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")


def _upload(client, run_id, bundle_dir, manifest, params, tags, on_file, before_complete) -> None:
    from mlflow.entities import Param, RunTag

    names = [*sorted(manifest.files), MANIFEST]  # the manifest last: a reader trusts it only if it exists
    for done, name in enumerate(names, start=1):
        artifact_dir = f"{BUNDLE_DIR_NAME}/{Path(name).parent.as_posix()}".rstrip("/.")
        with_retries(f"uploading {name}", lambda n=name, d=artifact_dir: client.log_artifact(run_id, str(bundle_dir / n), d), client.tracking_uri)
        # Progress proves this upload alive to others waiting on the same bundle (run_claims).
        with_retries("recording progress", lambda: client.set_tag(run_id, claims.HEARTBEAT_TAG, str(int(time.time()))), client.tracking_uri)
        on_file(name, done, len(names))
    param_list = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
    tag_list = [RunTag(k, str(v)) for k, v in sorted(tags.items()) if k != COMPLETE_TAG]
    with_retries("logging params and tags", lambda: client.log_batch(run_id, params=param_list, tags=tag_list), client.tracking_uri)
    before_complete(client, run_id)
    with_retries("marking the bundle complete", lambda: client.set_tag(run_id, COMPLETE_TAG, "true"), client.tracking_uri)
    with scrubbed_stdout(client.tracking_uri):  # MLflow prints "View run ... at: <URI>" here
        with_retries("finishing the run", lambda: client.set_terminated(run_id, status="FINISHED"), client.tracking_uri)


def _record_commit(client, run_id: str, commit: str | None, say: Callable[[str], None]) -> None:
    """Add the commit this reused build ran at to the run's commit list; `atlas.git_commit` keeps
    the first, which is the one its metadata.json records."""
    tags = client.get_run(run_id).data.tags
    commits = with_commit(tags.get(COMMITS_TAG) or tags.get("atlas.git_commit", ""), commit)
    if commits is not None:
        client.set_tag(run_id, COMMITS_TAG, commits)
        say(f"recorded commit {commit} on run {run_id} (tag {COMMITS_TAG}); its files are from commit "
            f"{tags.get('atlas.git_commit') or '(none)'}")


def _experiment_id(client, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    db = local_store.db_path(tracking_uri)
    # The embedded default keeps artifacts beside the database, in ./mlartifacts (SPEC).
    artifact_location = local_store.artifact_root(db) if db else None
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another upload created it first
        if found is None:
            raise
        return found.experiment_id


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:6000]  # MLflow's param value limit


def _transient(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("connection", "timeout", "timed out", "temporarily", "503", "502", "504", "429", "max retries"))

