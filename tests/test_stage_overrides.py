"""Each stage script runs alone with Hydra overrides and writes nothing but its outputs."""
from __future__ import annotations

import json
import sys

import pytest
from conftest import run

# Stages that work on arrays and files only: each one importing torch costs ~1.1 s of every repro.
TORCH_FREE = ("tensorize", "roundtrip", "drift", "archdoc", "upload")


def run_stage(project, stage: str, *overrides: str, exit_code: int = 0):
    """Run one stage script; for the torch-free ones, fail if torch was imported all the same."""
    done = run(["python", "-X", "importtime", f"stages/{stage}.py", *overrides], project, check=not exit_code)
    assert done.returncode == exit_code, done.stderr[-3000:]
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
    assert roundtrip["checks"][0]["details"]["tolerances"]["logits"]["atol"] == 0.1
    # The export's probes at other sizes of seq_len, judged again under atol=0.1 without the model.
    assert roundtrip["verdicts"]["dynamic_axes"] == "passed"
    assert roundtrip["checks"][1]["details"]["probes"][0]["outputs"]["logits"]["max_abs_err"] >= 0
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
    # Issue 25: those verdicts were made under overrides, not params.yaml's settings: the upload (even
    # a dry run) refuses them, naming the first stale report.
    refused = run_stage(project, "upload", "upload.dry_run=true", exit_code=1)
    assert "error: reports/tensorize.json: stale verdict: it was judged under other settings checks.calib_min_rows " \
           "than params.yaml" in refused.stderr
    assert json.loads((project / "reports/upload.json").read_text())["status"] == "refused"

    leftovers = [p for p in project.rglob("*") if p.name in ("outputs", ".hydra", "multirun") or p.suffix == ".log"]
    assert leftovers == []
    assert not (project / "mlflow.db").exists()  # a dry run pushes nothing


def test_a_failed_round_trip_is_localized_once_by_the_export(project):
    """The export localizes its failing attempt; the roundtrip stage takes that localization with
    the reused ORT run instead of building the model (no torch) and localizing it again."""
    strict = ("roundtrip.atol=0", "roundtrip.rtol=0", "escalation.enabled=false")
    for stage in ("tensorize", "canonical_outputs", "export"):
        run_stage(project, stage, *strict)
    attempt = json.loads((project / "reports/export.json").read_text())["attempts"][0]
    assert attempt["status"] == "roundtrip_failed" and attempt["localization"]["status"] == "found"

    run_stage(project, "roundtrip", *strict)  # fails if torch was imported
    roundtrip = json.loads((project / "reports/roundtrip.json").read_text())
    found = roundtrip["localization"]
    assert roundtrip["verdicts"] == {"roundtrip": "failed", "dynamic_axes": "skipped"}
    assert roundtrip["metrics"]["ort_outputs_reused"] is True
    assert {k: v for k, v in found.items() if k != "trail"} == attempt["localization"] and found["trail"]
    assert roundtrip["checks"][0]["details"]["localization"] == attempt["localization"]
    depth_plot = (project / "reports/plots/localization/error_by_depth.csv").read_text().splitlines()
    assert len(depth_plot) == 1 + len(found["trail"])

    # Another number of rows to localize on is another localization: the stage makes it itself.
    run(["python", "stages/roundtrip.py", *strict, "roundtrip.localize_rows=1"], project)
    again = json.loads((project / "reports/roundtrip.json").read_text())
    assert again["metrics"]["ort_outputs_reused"] is False and again["localization"]["rows"] == [found["rows"][0]]


_EXIT_PROBE = """
import atexit, sys, threading, time
from ml_atlas_sdk.pipeline.hydra_entry import exit_without_teardown

class Teardown:
    def __del__(self):  # runs only in the interpreter's teardown
        print("teardown", flush=True)

keep = Teardown()
atexit.register(lambda: print("atexit", flush=True))
if sys.argv[1] == "worker":
    threading.Thread(target=lambda: (time.sleep(0.5), print("worker done", flush=True))).start()
sys.stdout.write("buffered")
exit_without_teardown()
print("returned", flush=True)
"""


@pytest.mark.parametrize("thread", ["none", "worker"])
def test_a_stage_ends_without_teardown_but_with_atexit_unless_a_thread_still_works(tmp_path, thread):
    done = run([sys.executable, "-c", _EXIT_PROBE, thread], tmp_path)
    lines = done.stdout.replace("buffered", "buffered\n").split()
    assert "buffered" in lines and "atexit" in lines  # flushed, handlers run
    if thread == "none":
        assert "teardown" not in lines and "returned" not in lines
    else:  # a non-daemon thread may still be working: the normal exit joins it
        assert "returned" in lines and "worker" in lines and "teardown" in lines
