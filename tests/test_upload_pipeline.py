"""The whole pipeline into a real MLflow store (sqlite + local artifacts), from a fresh clone."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from conftest import run, set_params
from mlflow_helpers import client_for_project, complete_runs, runs
from ml_atlas_sdk.tensors import write_frame

SPEC_FILES = {"model.onnx", "metadata.json", "val_inputs.pt", "val_outputs.pt", "calibration_inputs.pt",
              "val_outputs_user.pt", "architecture.md", "validation_report.json", "manifest.json"}
SPEC_TAGS = {"atlas.bundle_schema_version", "atlas.model_name", "atlas.task_type", "atlas.architecture",
             "atlas.bundle_sha256", "atlas.skipped_checks", "atlas.git_commit", "atlas.bundle_complete"}


def _ran(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}


def test_fresh_clone_repro_pushes_a_complete_verified_bundle(project, tmp_path):
    first = run(["dvc", "repro"], project)
    assert _ran(first.stdout) == {"model_code_models", "tensorize", "canonical_outputs", "precision", "export", "roundtrip", "invariance",
                                  "drift", "archdoc", "upload"}
    assert "check" in first.stdout and "verdict" in first.stdout  # the end-of-run summary table

    (only,) = complete_runs(project)
    client = client_for_project(project)
    local = Path(client.download_artifacts(only.info.run_id, "atlas", str(tmp_path / "dl")))
    assert {p.name for p in local.iterdir()} == SPEC_FILES
    manifest = json.loads((local / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (local / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert len(data) == entry["size"], name
    assert set(manifest["files"]) == SPEC_FILES - {"manifest.json"}
    tags = only.data.tags
    assert SPEC_TAGS <= set(tags)
    assert tags["atlas.bundle_sha256"] == manifest["bundle_sha256"]
    assert tags["atlas.check.roundtrip"] == "passed" and tags["atlas.check.drift"] == "passed"
    assert only.info.status == "FINISHED"
    assert only.data.params["export.opset"] == "17"
    for name in ("val_inputs.pt", "val_outputs.pt"):
        tensors = torch.load(local / name, weights_only=True)
        assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())
    meta = json.loads((local / "metadata.json").read_text())
    assert meta["export"]["escalation_step"] == 0 and meta["versions"]["torch"] == torch.__version__
    assert meta["source"]["git_commit"] and meta["source"]["dvc_lock_sha256"]

    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert {"reports/plots/roundtrip/ctr.csv", "reports/plots/roundtrip/logits.csv",
            "reports/plots/drift/ctr.csv", "reports/plots/drift/logits.csv"} <= set(plots["data"])

    second = run(["dvc", "repro"], project)
    assert _ran(second.stdout) == set()

    # Issue 8.5: a forced push of the same build is the same bundle (metadata.json hashes only the
    # upstream stages' lock entries), so it reuses the run instead of making a new sha each time.
    for _ in range(2):
        forced = run(["dvc", "repro", "-f", "upload"], project)
        assert f"reused complete run {only.info.run_id}" in forced.stdout
    assert [r.info.run_id for r in runs(project)] == [only.info.run_id]

    run(["python", "-m", "ml_atlas_sdk.pipeline.params", "drift.tolerance_mse=0.002"], project)
    third = run(["dvc", "repro"], project)
    assert _ran(third.stdout) == {"drift", "upload"}

    # Issue 9.2: two pushes of different settings compare in MLflow: metrics per output, pictures
    # beside atlas/ (never inside), the verdict table as the description.
    run(["python", "-m", "ml_atlas_sdk.pipeline.params", "drift.tolerance_mse=0.002", "roundtrip.atol=0.001"], project)
    fourth = run(["dvc", "repro"], project)
    assert {"export", "roundtrip", "upload"} <= _ran(fourth.stdout)
    client = client_for_project(project)
    experiment_id = client.get_experiment_by_name("atlas-bundles").experiment_id
    key = "roundtrip.logits.tol_usage"
    by_usage = client.search_runs([experiment_id], "tags.`atlas.bundle_complete` = 'true'",
                                  order_by=[f"metrics.`{key}` DESC"])
    loose, strict = by_usage[-1], by_usage[0]
    assert strict.data.params["export.opset"] == loose.data.params["export.opset"]
    assert json.loads((project / "reports/roundtrip.json").read_text())["metrics"]["outputs"]["logits"]["tol_usage"] == \
        strict.data.metrics[key]  # the atol=0.001 push uses more of its tolerance than the atol=0.05 ones
    assert strict.data.metrics[key] > loose.data.metrics[key] > 0
    for pushed in (loose, strict):
        (point,) = client.get_metric_history(pushed.info.run_id, "roundtrip.ctr.max_abs_err")
        assert 0 <= point.value < 1e-4
        assert {"drift.ctr.mse", "export.accepted_step", "export.attempts", "seconds.export", "seconds.roundtrip"} \
            <= set(pushed.data.metrics)
        assert {a.path for a in client.list_artifacts(pushed.info.run_id, "plots")} == \
            {"plots/roundtrip_error_quantiles.png", "plots/drift_error_quantiles.png"}
        assert "| roundtrip | passed |" in pushed.data.tags["mlflow.note.content"]


def test_drift_refuses_upload_unless_skipped(project):
    canonical_like = pd.read_parquet(project / "data/demo/val_outputs.parquet")
    far = pd.DataFrame({c: [np.asarray(v) + 1.0 for v in canonical_like[c]] for c in canonical_like.columns})
    write_frame(far, project / "data/demo/far_outputs.parquet")
    set_params(project, data={"val_outputs": "data/demo/far_outputs.parquet"})

    refused = run(["dvc", "repro"], project, check=False)
    assert refused.returncode != 0
    assert "refusing to push" in refused.stderr and "drift" in refused.stderr
    assert complete_runs(project) == []
    upload_report = json.loads((project / "reports/upload.json").read_text())
    assert upload_report["status"] == "refused"

    set_params(project, checks={"skip": ["drift"]})
    run(["dvc", "repro"], project)
    (pushed,) = complete_runs(project)
    assert pushed.data.tags["atlas.skipped_checks"] == "drift"
    assert pushed.data.tags["atlas.check.drift"] == "skipped"


def test_unreachable_tracking_uri_fails_with_one_clear_error(project):
    run(["dvc", "repro", "precision", "roundtrip", "drift", "invariance", "archdoc"], project)
    result = run(["python", "stages/upload.py", "mlflow.tracking_uri=http://s3cret@127.0.0.1:9"], project,
                 check=False, timeout=300)
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: mlflow.tracking_uri http://127.0.0.1:9")
    assert "attempt" in lines[0]
    assert "s3cret" not in result.stdout + result.stderr
    report = (project / "reports/upload.json").read_text()
    assert "s3cret" not in report and json.loads(report)["status"] == "failed"
    assert runs(project) == []
