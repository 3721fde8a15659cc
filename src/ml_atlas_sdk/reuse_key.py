"""What makes two uploads the same bundle for atlas: the content it consumes, not where it came from.

`bundle_sha256` covers metadata.json byte for byte, and metadata.json records its `source` (git
commit, dirty flag, dvc.lock hash): keyed on it, every commit pushed a duplicate run of an unchanged
model. The content key hashes every bundle file as stored, except that metadata.json counts without
its provenance, plus the run's params (what it was validated under: MLflow params never change, so
a run can only stand for one set of them). A rebuild at another commit then reuses the run and
records the commit on it (mlflow_store), while a changed model, tensor, metadata field or setting
gives another key and a new run.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ml_atlas_sdk.bundle import MANIFEST, METADATA, Manifest

CONTENT_TAG = "atlas.content_sha256"
PROVENANCE_FIELDS = ("source",)  # metadata.json fields that say where a build ran, not what it holds
# Files whose bytes hold provenance: a reused run's copies may differ from this build's in size.
PROVENANCE_FILES = frozenset({METADATA, MANIFEST})
COMMITS_TAG = "atlas.git_commits"  # every commit whose build a run holds, oldest first
MAX_TAG_CHARS = 5000  # MLflow's smallest tag value limit across its versions and stores


def content_sha256(bundle_dir: Path, manifest: Manifest, params: dict[str, Any]) -> str:
    lines = []
    for name in sorted(manifest.files):
        digest = manifest.files[name]["sha256"]
        if name == METADATA:
            doc = json.loads((bundle_dir / METADATA).read_text())
            kept = {k: v for k, v in doc.items() if k not in PROVENANCE_FIELDS}
            digest = _sha(json.dumps(kept, sort_keys=True))
        lines.append(f"{digest}  {name}\n")
    lines.append(f"{_sha(json.dumps(params, sort_keys=True, default=str))}  params\n")
    return _sha("".join(lines))


def with_commit(commits: str, commit: str | None) -> str | None:
    """The commit list with `commit` appended (None: nothing to record). The first entry stays when
    the list must be cut to fit a tag; the oldest of the rest go."""
    listed = commits.split()
    if not commit or commit in listed:
        return None
    listed.append(commit)
    while len(" ".join(listed)) > MAX_TAG_CHARS and len(listed) > 2:
        del listed[1]
    return " ".join(listed)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
