"""Where a bundle came from: package versions, git commit and dirty flag, dvc.lock hash."""
from __future__ import annotations

import hashlib
import os
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from ml_atlas_sdk import __version__

    return {"sdk": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def source_info(root: Path = Path(".")) -> dict[str, Any]:
    """git commit + dirty flag (None outside git); dvc.lock sha256 only when DVC runs the stage."""
    commit = _git(root, "rev-parse", "HEAD")
    # DVC rewrites dvc.lock and reports/ while it runs; "dirty" means code or config changed.
    dirty = None if commit is None else bool(
        _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!reports"))
    lock = root / "dvc.lock"
    run_by_dvc = "DVC_STAGE" in os.environ
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "dvc_lock_sha256": file_sha256(lock) if run_by_dvc and lock.is_file() else None,
    }


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
