"""Each stage script runs alone with Hydra overrides and writes nothing but its outputs."""
from __future__ import annotations

import json

from conftest import run

# Stages that work on arrays and files only: each one importing torch costs ~1.1 s of every repro.
TORCH_FREE = ("tensorize", "roundtrip", "drift", "archdoc", "upload")


def run_stage(project, stage: str, *overrides: str):
    """Run one stage script; for the torch-free ones, fail if torch was imported all the same."""
    done = run(["python", "-X", "importtime", f"stages/{stage}.py", *overrides], project)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    if stage in TORCH_FREE:
        assert "torch" not in imported, f"stage {stage} imported torch"
    else:
        assert "torch" in imported, f"stage {stage}: is the check above still seeing imports?"
    return done


def test_each_stage_runs_alone_with_overrides_and_leaves_no_hydra_files(project):
    run_stage(project, "tensorize", "checks.calib_min_rows=5000")
    tensorize = json.loads((project / "reports/tensorize.json").read_text())
    assert tensorize["verdicts"]["calib_sample_count"] == "warned"  # 1024 rows < 5000

    run_stage(project, "canonical_outputs", "roundtrip.batch_size=100", "checks.skip=[nan_inf]")
    canonical = json.loads((project / "reports/canonical_outputs.json").read_text())
    assert canonical["verdicts"]["nan_inf[val_outputs]"] == "skipped"
    assert canonical["metrics"]["logits"]["shape"] == [512, 3]  # batching by 100 still covers every row
    run_stage(project, "export", "export.opset=18", "export.batch_size=16")
    export = json.loads((project / "reports/export.json").read_text())
    assert export["settings_used"]["opset"] == 18 and export["metrics"]["export_sample_rows"] == 16

    run_stage(project, "roundtrip", "roundtrip.atol=0.1")
    roundtrip = json.loads((project / "reports/roundtrip.json").read_text())
    assert roundtrip["checks"][0]["details"]["atol"] == 0.1
    # Another tolerance than the export judged by: the export's ORT run is not reused, ORT runs again...
    assert roundtrip["metrics"]["ort_outputs_reused"] is False
    run_stage(project, "roundtrip")
    reused = json.loads((project / "reports/roundtrip.json").read_text())
    # ...while the export's own settings reuse it, and the reused outputs are the numbers ORT gives.
    assert reused["metrics"]["ort_outputs_reused"] is True
    errors = {k: {n: m["max_abs_err"] for n, m in r["metrics"]["outputs"].items()} for k, r in
              (("computed", roundtrip), ("reused", reused))}
    assert errors["computed"] == errors["reused"] and errors["reused"]["logits"] > 0, errors

    run_stage(project, "precision", "checks.skip=[fp16_roundtrip]")
    precision = json.loads((project / "reports/precision.json").read_text())
    assert precision["verdicts"]["fp16_roundtrip"] == "skipped" and precision["metrics"]["seconds"]["fp16"] == 0

    for stage in ("invariance", "drift", "archdoc"):
        run_stage(project, stage)
    run_stage(project, "upload", "upload.dry_run=true")
    assert json.loads((project / "reports/upload.json").read_text())["status"] == "dry_run"

    leftovers = [p for p in project.rglob("*") if p.name in ("outputs", ".hydra", "multirun") or p.suffix == ".log"]
    assert leftovers == []
    assert not (project / "mlflow.db").exists()  # a dry run pushes nothing
