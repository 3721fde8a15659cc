"""The atlas bundle on disk: the exact files pushed, a manifest, and the gate on check verdicts."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_atlas_sdk.checks.result import CheckResult, Verdict, worst
from ml_atlas_sdk.errors import AtlasBundleError
from ml_atlas_sdk.provenance import file_sha256

BUNDLE_DIR_NAME = "atlas"
MODEL_ONNX = "model.onnx"  # its external weights, when exported so, sit beside it as model.onnx.data
MANIFEST = "manifest.json"
VALIDATION_REPORT = "validation_report.json"
METADATA = "metadata.json"
ARCHITECTURE = "architecture.md"
# Tensor file stems (`<stem>.pt`). val_outputs is the canonical PyTorch outputs the build computes;
# the user's own reference outputs keep a separate name so they never pass for canonical ones.
VAL_INPUTS, VAL_OUTPUTS, VAL_OUTPUTS_USER, CALIBRATION_INPUTS = (
    "val_inputs", "val_outputs", "val_outputs_user", "calibration_inputs")


def tensor_file(stem: str) -> str:
    return f"{stem}.pt"


# bundle file -> required? (optional ones appear only when supplied)
TENSOR_FILES = {tensor_file(VAL_INPUTS): True, tensor_file(VAL_OUTPUTS): True,
                tensor_file(CALIBRATION_INPUTS): False, tensor_file(VAL_OUTPUTS_USER): False}


@dataclass(frozen=True)
class Manifest:
    files: dict[str, dict[str, Any]]  # name -> {sha256, size}
    bundle_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "bundle_sha256": self.bundle_sha256}


def bundle_sha256(files: dict[str, dict[str, Any]]) -> str:
    """sha256 over `sha256sum`-style lines of the sorted file list: stable and easy to recompute."""
    lines = "".join(f"{files[name]['sha256']}  {name}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def build_manifest(bundle_dir: Path) -> Manifest:
    files = {
        p.relative_to(bundle_dir).as_posix(): {"sha256": file_sha256(p), "size": p.stat().st_size}
        for p in sorted(bundle_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    return Manifest(files, bundle_sha256(files))


def validation_report(results: list[CheckResult]) -> dict[str, Any]:
    by_name: dict[str, list[CheckResult]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result)
    return {
        "verdicts": {name: worst(r.verdict for r in rs).value for name, rs in sorted(by_name.items())},
        "skipped": sorted(name for name, rs in by_name.items() if all(r.verdict is Verdict.SKIPPED for r in rs)),
        "checks": [r.to_dict() for r in results],
    }


def gate(results: list[CheckResult]) -> None:
    """Refuse the bundle, naming every failed check, unless all non-skipped checks passed or warned."""
    failed = [r for r in results if r.verdict is Verdict.FAILED]
    if failed:
        listed = "; ".join(f"{r.label}: {r.message}" for r in failed)
        raise AtlasBundleError(f"refusing to push: {len(failed)} check(s) failed: {listed}")


def write_json(path: Path, payload: Any) -> None:
    # sort_keys and a fixed indent keep these files byte-identical for identical content.
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def assemble_bundle(
    out_dir: Path,
    onnx_path: Path,
    tensor_files: dict[str, Path],
    metadata_json: dict[str, Any],
    results: list[CheckResult],
    architecture_md: str | None,
) -> Manifest:
    """Write the bundle into `out_dir` (a fresh folder) and return its manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, out_dir / MODEL_ONNX)
    external = onnx_path.with_name(onnx_path.name + ".data")
    if external.is_file():
        shutil.copyfile(external, out_dir / f"{MODEL_ONNX}.data")
    for name, required in TENSOR_FILES.items():
        src = tensor_files.get(name)
        if src is None:
            if required:
                raise AtlasBundleError(f"bundle: {name} is required but was not produced")
            continue
        shutil.copyfile(src, out_dir / name)
    write_json(out_dir / METADATA, metadata_json)
    if architecture_md is not None:
        (out_dir / ARCHITECTURE).write_text(architecture_md)
    write_json(out_dir / VALIDATION_REPORT, validation_report(results))
    manifest = build_manifest(out_dir)
    write_json(out_dir / MANIFEST, manifest.to_dict())
    return manifest
