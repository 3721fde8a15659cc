"""Which run holds a bundle: reuse only a FINISHED run whose files are all there, mark killed
uploads FAILED, and let exactly one of several concurrent uploads of one bundle create a run.

Runs are found by their content key (reuse_key: what atlas consumes, not the commit that built
it), so a rebuild at another commit reuses the run. Each upload run is tagged with the bundle sha,
the content key, its uploader (host:pid) and a heartbeat when it is
created. The claim is checked after create: an uploader that then sees another live or complete
run of the same bundle deletes its own run and waits. Two racing creators cannot both win, since
the later insert always sees the earlier one (both may lose; they retry after a random pause).
"""
from __future__ import annotations

import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, MANIFEST, Manifest
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.provenance import file_sha256
from ml_atlas_sdk.reuse_key import CONTENT_TAG, PROVENANCE_FILES

COMPLETE_TAG = "atlas.bundle_complete"
SHA_TAG = "atlas.bundle_sha256"
OWNER_TAG = "atlas.upload_owner"
HEARTBEAT_TAG = "atlas.upload_heartbeat"
# A RUNNING upload from another host is presumed dead after this long without a finished file.
ORPHAN_AFTER_S = 3600.0
WAIT_FOR_RIVAL_S = 1800.0
POLL_S = 0.5
Say = Callable[[str], None]


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_tags(sha: str, content: str) -> dict[str, str]:
    return {SHA_TAG: sha, CONTENT_TAG: content, OWNER_TAG: owner(), HEARTBEAT_TAG: str(int(time.time()))}


def missing_files(client, run_id: str, manifest: Manifest, manifest_size: int,
                  any_size: frozenset[str] = frozenset()) -> list[str]:
    """Manifest files the run does not hold with the manifest's size ([] = all there); those in
    `any_size` need only be there (a run built at another commit holds its own provenance)."""
    expected = {name: entry["size"] for name, entry in manifest.files.items()} | {MANIFEST: manifest_size}
    stored = _sizes(client, run_id, BUNDLE_DIR_NAME)
    return sorted(name for name, size in expected.items()
                  if name not in stored or (name not in any_size and stored[name] != size))


def unusable_reason(client, run, manifest: Manifest, manifest_size: int) -> str | None:
    """Why a complete-tagged run cannot be reused for this bundle (None: it holds exactly it).

    Sizes first (cheap, and names what was deleted), then content: a file corrupted at the same
    size passes a size check, so every stored file is downloaded and hashed against the manifest.
    """
    if run.info.lifecycle_stage == "deleted":
        return "it is in MLflow's trash (deleted)"
    # Same content built at another commit: its metadata.json and manifest.json hold that build's
    # provenance, so they are checked against the run's own manifest and tag, the rest against ours.
    other_build = run.data.tags.get(SHA_TAG) != manifest.bundle_sha256
    provenance = PROVENANCE_FILES if other_build else frozenset()
    missing = missing_files(client, run.info.run_id, manifest, manifest_size, provenance)
    if missing:
        return (f"it is marked complete but lacks {len(missing)} file(s) of the manifest "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    with tempfile.TemporaryDirectory(prefix="atlas-reuse-") as tmp:
        local = Path(client.download_artifacts(run.info.run_id, BUNDLE_DIR_NAME, tmp))
        try:
            stored = json.loads((local / MANIFEST).read_text())
        except ValueError:
            stored = {}
        own = stored.get("files") if isinstance(stored.get("files"), dict) else {}
        expected = {name: (own if name in provenance else manifest.files).get(name, {}).get("sha256")
                    for name in manifest.files}
        differ = sorted(name for name, sha in expected.items() if file_sha256(local / name) != sha)
        wanted_sha = run.data.tags.get(SHA_TAG) if other_build else manifest.bundle_sha256
        if stored.get("bundle_sha256") != wanted_sha or (not other_build and own != manifest.files):
            differ.append(MANIFEST)
    if differ:
        return f"its stored {', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''} differ(s) from the manifest's sha256"
    return None


def orphan_reason(run) -> str | None:
    """Why a RUNNING upload run (with an owner tag) can no longer finish (None: it may be alive)."""
    host, _, pid = run.data.tags.get(OWNER_TAG, "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return f"its upload (pid {pid} on {host}) is gone"
    beat = run.data.tags.get(HEARTBEAT_TAG, "")
    if beat.isdigit() and time.time() - int(beat) > ORPHAN_AFTER_S:
        return f"its upload made no progress for {(time.time() - int(beat)) / 60:.0f} min"
    return None


def claim_or_reuse(client, experiment_id: str, manifest: Manifest, manifest_size: int,
                   create: Callable[[dict[str, str]], str], say: Say, content: str) -> tuple[str, bool]:
    """(run_id, reused): a valid complete run of this content (`content`, reuse_key), or a new
    run that won the claim."""
    sha = manifest.bundle_sha256
    told: set[str] = set()  # complete runs found unusable, said once
    waited: set[str] = set()  # live uploads waited for, said once
    deadline = time.monotonic() + WAIT_FOR_RIVAL_S
    fail_orphans(client, experiment_id, say)
    while True:
        complete, live = _holders(client, experiment_id, manifest, manifest_size, content, say, told)
        if complete:
            return complete, True
        if live:
            if live[0] not in waited:
                waited.add(live[0])
                say(f"waiting for run {live[0]}: another upload of bundle {sha[:12]} is in progress "
                    f"(waiting up to {WAIT_FOR_RIVAL_S:.0f} s)")
            if time.monotonic() > deadline:
                raise AtlasBundleError(f"bundle {sha[:12]}: another upload (run {live[0]}) is still running; try again later")
            time.sleep(POLL_S)
            continue
        mine = create(claim_tags(sha, content))
        complete, live = _holders(client, experiment_id, manifest, manifest_size, content, say, told, exclude=mine)
        if not complete and not live:
            return mine, False
        client.delete_run(mine)  # lost the race: the other run will hold the bundle
        time.sleep(random.uniform(0.05, 1.0))


def _holders(client, experiment_id, manifest, manifest_size, content, say, told, exclude=None) -> tuple[str | None, list[str]]:
    """A reusable complete run of the content, and the live uploads of it (orphans marked FAILED)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{CONTENT_TAG}` = '{content}'",
                              max_results=1000, order_by=["attributes.start_time ASC"])
    live = []
    for run in runs:
        run_id, status, tags = run.info.run_id, run.info.status, run.data.tags
        if run_id == exclude:
            continue
        if status == "RUNNING" and OWNER_TAG in tags:  # without it: not an upload of ours
            reason = orphan_reason(run)
            if reason is None:
                live.append(run_id)  # also when already tagged complete: it is about to finish
                continue
            client.set_terminated(run_id, status="FAILED")
            say(f"marked orphaned run {run_id} of bundle {manifest.bundle_sha256[:12]} FAILED: {reason}")
        elif status == "FINISHED" and tags.get(COMPLETE_TAG) == "true" and run_id not in told:
            reason = unusable_reason(client, run, manifest, manifest_size)
            if reason is None:
                return run_id, live
            told.add(run_id)  # checked once per upload: its content does not become right later
            say(f"not reusing run {run_id}: {reason}; pushing a new run")
    return None, live


def fail_orphans(client, experiment_id: str, say: Say) -> None:
    """Mark FAILED every RUNNING upload run of the experiment whose process is gone, whatever its
    bundle: a killed upload of a bundle nobody pushes again must not stay RUNNING forever."""
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in runs:
        if OWNER_TAG in run.data.tags and (reason := orphan_reason(run)) is not None:
            client.set_terminated(run.info.run_id, status="FAILED")
            sha = run.data.tags.get(SHA_TAG, "")
            say(f"marked orphaned run {run.info.run_id} of bundle {sha[:12]} FAILED: {reason}")


def _sizes(client, run_id: str, folder: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for info in client.list_artifacts(run_id, folder):
        if info.is_dir:
            out |= _sizes(client, run_id, info.path)
        else:
            out[Path(info.path).relative_to(BUNDLE_DIR_NAME).as_posix()] = info.file_size
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
