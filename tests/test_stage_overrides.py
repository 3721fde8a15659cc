"""Each stage script runs alone with Hydra overrides and writes nothing but its outputs."""
from __future__ import annotations

import json

from conftest import run


def test_each_stage_runs_alone_with_overrides_and_leaves_no_hydra_files(project):
    run(["python", "stages/tensorize.py", "checks.calib_min_rows=5000"], project)
    tensorize = json.loads((project / "reports/tensorize.json").read_text())
    assert tensorize["verdicts"]["calib_sample_count"] == "warned"  # 1024 rows < 5000

    run(["python", "stages/canonical_outputs.py", "roundtrip.batch_size=100", "checks.skip=[nan_inf]"], project)
    canonical = json.loads((project / "reports/canonical_outputs.json").read_text())
    assert canonical["verdicts"]["nan_inf[val_outputs]"] == "skipped"
    assert canonical["metrics"]["logits"]["shape"] == [512, 3]  # batching by 100 still covers every row
    run(["python", "stages/export.py", "export.opset=18", "export.batch_size=16"], project)
    export = json.loads((project / "reports/export.json").read_text())
    assert export["settings_used"]["opset"] == 18 and export["metrics"]["export_sample_rows"] == 16

    run(["python", "stages/roundtrip.py", "roundtrip.atol=0.1"], project)
    roundtrip = json.loads((project / "reports/roundtrip.json").read_text())
    assert roundtrip["checks"][0]["details"]["atol"] == 0.1
    # Another tolerance than the export judged by: the export's ORT run is not reused, ORT runs again...
    assert roundtrip["metrics"]["ort_outputs_reused"] is False
    run(["python", "stages/roundtrip.py"], project)
    reused = json.loads((project / "reports/roundtrip.json").read_text())
    # ...while the export's own settings reuse it, and the reused outputs are the numbers ORT gives.
    assert reused["metrics"]["ort_outputs_reused"] is True
    errors = {k: {n: m["max_abs_err"] for n, m in r["metrics"]["outputs"].items()} for k, r in
              (("computed", roundtrip), ("reused", reused))}
    assert errors["computed"] == errors["reused"] and errors["reused"]["logits"] > 0, errors

    run(["python", "stages/precision.py", "checks.skip=[fp16_roundtrip]"], project)
    precision = json.loads((project / "reports/precision.json").read_text())
    assert precision["verdicts"]["fp16_roundtrip"] == "skipped" and precision["metrics"]["seconds"]["fp16"] == 0

    for stage in ("invariance", "drift", "archdoc"):
        run(["python", f"stages/{stage}.py"], project)
    run(["python", "stages/upload.py", "upload.dry_run=true"], project)
    assert json.loads((project / "reports/upload.json").read_text())["status"] == "dry_run"

    leftovers = [p for p in project.rglob("*") if p.name in ("outputs", ".hydra", "multirun") or p.suffix == ".log"]
    assert leftovers == []
    assert not (project / "mlflow.db").exists()  # a dry run pushes nothing
