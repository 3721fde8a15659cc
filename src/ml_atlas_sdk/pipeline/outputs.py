"""Write stage outputs so a failure never leaves something a later stage could trust."""
from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.pipeline.paths import EXPORT_INFO, REPORTS


@contextlib.contextmanager
def replaced_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces `final` only if the block finishes."""
    scratch = final.with_name(f".{final.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    scratch.rename(final)


def forget(*paths: Path) -> None:
    """Remove an earlier run's outputs before a stage starts, so they cannot outlive a failure."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def stale_report(stage: str) -> Path:
    return REPORTS / f"{stage}.json"


def begin(stage: str, *outputs: Path) -> None:
    """Forget a stage's earlier report and outputs, and the upload report too: if this stage fails,
    DVC stops before upload, and an old "pushed" with an old run id must not look like this run's."""
    forget(stale_report(stage), *outputs, stale_report("upload"))


def finish(report) -> None:
    """Write a stage's report (DVC metrics) and print its short summary."""
    report.stop().write()
    report.print_summary()


def read_export_info() -> dict:
    """What the export stage accepted: settings used and the export sample's rows."""
    return read_export_json(EXPORT_INFO)


def read_export_json(path: Path) -> dict:
    """One of the JSON files the export stage writes beside model.onnx."""
    if not path.is_file():
        raise AtlasInputError(f"{path} is missing: run `dvc repro export` first")
    return json.loads(path.read_text())
