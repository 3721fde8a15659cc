"""Shared fixtures: a fresh git + DVC copy of this repo, and a way to run its commands."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def project_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="atlas-tests", GIT_AUTHOR_EMAIL="tests@example.invalid",
        GIT_COMMITTER_NAME="atlas-tests", GIT_COMMITTER_EMAIL="tests@example.invalid",
        PYTHONUNBUFFERED="1",
    )
    env.pop("ANTHROPIC_API_KEY", None)
    env.update(extra or {})
    return env


def run(cmd: list[str] | str, cwd: Path, check: bool = True, env: dict[str, str] | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command in the project copy; on unexpected failure show its output in the assertion."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env or project_env(), capture_output=True, text=True, timeout=timeout,
        shell=isinstance(cmd, str),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    return [f for f in listed if (REPO_ROOT / f).is_file() and not f.startswith(("tests/", "bench/"))]


def make_project_copy(dest: Path) -> Path:
    """Copy the working tree (tracked and not-ignored files) into `dest` as a fresh git repo."""
    for rel in _project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, target)
    for stale in ("dvc.lock",):
        (dest / stale).unlink(missing_ok=True)
    shutil.rmtree(dest / "reports", ignore_errors=True)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "fresh copy"], dest)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh clone-like copy of the project in a temporary git repo."""
    return make_project_copy(tmp_path / "project")


def set_params(project_dir: Path, **sections) -> None:
    """Edit params.yaml in place: set_params(p, export={"opset": 18}) merges into `export`."""
    path = project_dir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(params.get(section), dict):
            params[section].update(values)
        else:
            params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))
