"""Bind each stage's verdicts to what they judged, so the upload pushes nothing else.

A stage's report gets a `judged` block when the stage finishes: the sha256 of every file under the
build folders it read or wrote, of each settings section it ran under, and `sha256` over the whole
report (verdicts, metrics, those digests). The upload recomputes all three before it assembles the
bundle and refuses, naming the stale report, when a file was swapped (`build/onnx/model.onnx`), a
verdict edited (`failed` -> `passed`), or a stage run by hand under settings that are not those in
params.yaml (`python stages/drift.py drift.tolerance_max_abs=100`); the upload itself must run under
them too, so the bundle never records settings its verdicts were not made under. A digest is not a
signature: it catches every change made without also recomputing it, which is what a hand-run
stage, a copied file or an edited verdict is.

STAGES mirrors each stage's `dvc.yaml` entry (its `build/` deps and outs, its params);
tests/test_gate_binding.py keeps the two equal.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.provenance import file_sha256
from ml_atlas_sdk.settings import Settings

KEY = "judged"
_T, _C, _O, _A = "build/tensors", "build/canonical", "build/onnx", "build/archdoc"
STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # stage -> (build folders, settings keys)
    "tensorize": ((_T,), ("metadata", "data", "checks.skip", "checks.calib_min_rows")),
    "canonical_outputs": ((_T, _C), ("model", "metadata", "checks.skip", "roundtrip.batch_size")),
    "export": ((_T, _C, _O), ("model", "metadata", "export", "escalation", "roundtrip", "checks.skip",
                              "checks.axis_sizes")),
    "roundtrip": ((_O, _T, _C), ("model", "metadata", "roundtrip", "checks.skip", "checks.axis_sizes")),
    "invariance": ((_T, _O), ("model", "metadata", "checks.skip")),
    "drift": ((_T, _C), ("drift", "checks.skip")),
    "precision": ((_T, _C), ("model", "metadata", "precision", "roundtrip.batch_size", "checks.skip")),
    "archdoc": ((_O, _A), ("model", "metadata", "archdoc")),
}


def bind(stage: str, report_path: Path, cfg: Settings) -> None:
    """Add the `judged` block to a finished stage's report (rewritten atomically)."""
    from ml_atlas_sdk.reports import write_json

    if stage not in STAGES or not report_path.is_file():
        return
    report = json.loads(report_path.read_text())
    if report.get("status") == "error":
        return  # no verdicts to bind; the upload refuses such a report anyway
    folders, keys = STAGES[stage]
    report[KEY] = {"files": _file_digests(folders), "settings": _settings_digests(cfg, keys)}
    report[KEY]["sha256"] = _report_digest(report)
    write_json(report_path, report)


def project_settings(cfg: Settings, params: Path = Path("params.yaml")) -> Settings:
    """The settings in the project's params.yaml (the upload's own `cfg` where there is none)."""
    if not params.is_file():
        return cfg
    from omegaconf import OmegaConf

    return Settings.from_config(OmegaConf.to_container(OmegaConf.load(params), resolve=True))


def check(stage: str, report_path: Path, report: dict[str, Any], cfg: Settings, project: Settings) -> None:
    """Refuse, in one line naming the report, unless it still describes the files here and was made,
    like this upload (`cfg`), under the settings in params.yaml (`project`)."""
    where = f"{report_path}: stale verdict"
    rerun = f"run `dvc repro {stage}` (or `python stages/{stage}.py`) before uploading"
    judged = report.get(KEY)
    if not isinstance(judged, dict) or not isinstance(judged.get("files"), dict) or not isinstance(judged.get("settings"), dict):
        raise AtlasBundleError(f"{where}: it does not record what it judged; {rerun}")
    if judged.get("sha256") != _report_digest(report):
        raise AtlasBundleError(f"{where}: its content was changed after the stage wrote it "
                               f"(sha256 differs from its own record); {rerun}")
    folders, keys = STAGES[stage]
    now = _file_digests(folders)
    changed = sorted(p for p in set(now) | set(judged["files"]) if now.get(p) != judged["files"].get(p))
    if changed:
        raise AtlasBundleError(f"{where}: {', '.join(changed[:3])} differ(s) from the file(s) it judged; {rerun}")
    wanted, mine = _settings_digests(project, keys), _settings_digests(cfg, keys)
    changed = sorted(k for k in set(wanted) | set(judged["settings"]) if wanted.get(k) != judged["settings"].get(k))
    if changed:
        raise AtlasBundleError(f"{where}: it was judged under other settings {', '.join(changed)} than params.yaml; {rerun}")
    overridden = sorted(k for k in wanted if wanted[k] != mine[k])
    if overridden:  # the bundle would record settings the verdicts were not made under
        raise AtlasBundleError(f"{where}: the upload was given settings {', '.join(overridden)} other than params.yaml, "
                               "which its verdicts were made under; change params.yaml (or conf/, then `make params`) "
                               "and run `dvc repro`")


def _file_digests(folders: tuple[str, ...]) -> dict[str, str]:
    files = sorted(p for folder in folders if Path(folder).is_dir() for p in Path(folder).rglob("*") if p.is_file())
    return {p.as_posix(): _sha256(p.as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files}


@functools.lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """One hash per file version in a process: the upload checks model.onnx for four reports."""
    return file_sha256(Path(path))


def _settings_digests(cfg: Settings, keys: tuple[str, ...]) -> dict[str, str]:
    dumped = cfg.model_dump(mode="json")
    out = {}
    for key in keys:
        value: Any = dumped
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    return out


def _report_digest(report: dict[str, Any]) -> str:
    """sha256 over the report as written, without its own digest (and without `timing`, added
    after the stage's work by hydra_entry and different on every run anyway)."""
    body = {k: v for k, v in report.items() if k != "timing"}
    body[KEY] = {k: v for k, v in (report.get(KEY) or {}).items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
