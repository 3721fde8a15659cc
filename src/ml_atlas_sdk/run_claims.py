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

import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

from ml_atlas_sdk.bundle import BUNDLE_DIR_NAME, MANIFEST, Manifest
from ml_atlas_sdk.errors import AtlasBundleError
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
    told: set[str] = set()
    deadline = time.monotonic() + WAIT_FOR_RIVAL_S
    while True:
        complete, live = _holders(client, experiment_id, manifest, manifest_size, content, say, told)
        if complete:
            return complete, True
        if live:
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
        elif status == "FINISHED" and tags.get(COMPLETE_TAG) == "true":
            other_build = tags.get(SHA_TAG) != manifest.bundle_sha256
            missing = missing_files(client, run_id, manifest, manifest_size, PROVENANCE_FILES if other_build else frozenset())
            if not missing:
                return run_id, live
            if run_id not in told:
                told.add(run_id)
                say(f"not reusing run {run_id}: it is marked complete but lacks {len(missing)} file(s) "
                    f"of the manifest ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); pushing a new run")
    return None, live


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
