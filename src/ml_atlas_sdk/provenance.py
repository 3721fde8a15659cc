"""Where a bundle came from: package versions, git commit and dirty flag, upstream dvc.lock hash."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

REPORTS_DIR = "reports/"  # each stage's report: how the stage went, not what the bundle holds


def versions() -> dict[str, str]:
    from ml_atlas_sdk import __version__

    # The installed distributions' versions: what `torch.__version__` & co. say, without importing
    # torch into stages that never run the model.
    return {"sdk": __version__, **{name: distribution_version(name) or "" for name in ("torch", "onnx", "onnxruntime")}}


def source_info(root: Path = Path(".")) -> dict[str, Any]:
    """git commit + dirty flag (None outside git); dvc.lock sha256 only when DVC runs the stage."""
    commit = _git(root, "rev-parse", "HEAD")
    # DVC rewrites dvc.lock and reports/ while it runs; "dirty" means code or config changed.
    dirty = None if commit is None else bool(
        _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!reports"))
    stage = os.environ.get("DVC_STAGE")
    return {"git_commit": commit, "git_dirty": dirty, "dvc_lock_sha256": upstream_lock_sha256(root / "dvc.lock", stage) if stage else None}


def upstream_lock_sha256(lock: Path, stage: str) -> str | None:
    """sha256 of dvc.lock's entries for every stage but the running one: what the bundle was built
    from. Hashing the whole file made each forced push a new bundle: the running stage's entry
    holds its previous output, and stage reports (metrics under reports/) hold timings."""
    if not lock.is_file():
        return None
    import yaml

    stages = dict((yaml.safe_load(lock.read_text()) or {}).get("stages") or {})
    stages.pop(stage.rpartition(":")[2], None)  # DVC_STAGE may be "path/dvc.yaml:name"
    kept = {name: {**entry, "outs": [o for o in entry.get("outs", []) if not str(o.get("path", "")).startswith(REPORTS_DIR)]}
            for name, entry in stages.items()}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def distribution_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None
