"""The dynamic_axes check, the scale-aware round-trip rule and per-output tolerances through a real
`dvc repro` in one project copy, model by model (the SDK door: tests/test_dynamic_axes.py)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import make_project_copy, run, set_params
from fixture_models import trace_hazards as th


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_project_copy(tmp_path_factory.mktemp("axes") / "project")
    shutil.copy(th.__file__, project / "models" / "trace_hazards.py")
    folder = project / "data" / "hazards"
    folder.mkdir(parents=True)
    data = th.token_data()
    pq.write_table(pa.table({n: pa.FixedShapeTensorArray.from_numpy_ndarray(v) for n, v in data.items()}),
                   folder / "val_inputs.parquet")
    return project


def _use(project: Path, cls_name: str, meta: dict, **sections) -> None:
    weights = f"data/hazards/{cls_name}.pt"
    torch.save(getattr(th, cls_name)().state_dict(), project / weights)
    set_params(project, model={"name": meta["model_name"], "factory": f"trace_hazards:{cls_name}", "kwargs": {},
                               "weights": weights, "checkpoint": None, "trust_pickle": False, "code_dirs": ["models"]},
               metadata={"input_dtypes": None, **meta},
               data={"val_inputs": "data/hazards/val_inputs.parquet", "val_outputs": None, "calibration_inputs": None},
               export={"batch_size": 32}, **sections)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", cls_name], project)


def _report(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


def test_pipeline_refuses_frozen_and_zeroed_exports_and_pushes_what_dynamo_gets_right(project):
    # All-zero ONNX of outputs below 0.05: refused on roundtrip with the default settings.
    _use(project, "ZeroUnderExport", th.token_metadata("zeroed", 64))
    refused = run(["dvc", "repro"], project, check=False, timeout=900)
    assert refused.returncode != 0
    assert _report(project, "roundtrip")["verdicts"]["roundtrip"] == "failed"
    assert "refusing to push" in refused.stderr + refused.stdout

    # The unrolled loop: no ladder step exports it right; refused naming the axis, size and cause.
    _use(project, "LoopOverSeq", th.token_metadata("loop"))
    refused = run(["dvc", "repro"], project, check=False, timeout=900)
    assert refused.returncode != 0
    axes = [c for c in _report(project, "roundtrip")["checks"] if c["name"] == "dynamic_axes"][0]
    assert axes["verdict"] == "failed" and "onnxruntime fails at seq_len=8" in axes["message"]
    assert "in range(x.shape[1])" in axes["message"]
    assert [a["status"] for a in _report(project, "export")["attempts"]][:5] == ["axes_failed"] * 5

    # `.item()` trimming: TorchScript froze it, the dynamo step is pushed, and it verifies.
    _use(project, "TrimToLongest", th.token_metadata("trim"))
    run(["dvc", "repro"], project, timeout=900)
    upload = _report(project, "upload")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    pushed = MlflowClient(uri).get_run(upload["run_id"]).data
    assert 0 <= pushed.metrics["dynamic_axes.seq_len.24.tol_usage"] < 1  # how close each size came to failing
    assert _report(project, "roundtrip")["metrics"]["dynamic_axes"].keys() == {"seq_len=8", "seq_len=24"}
    assert pushed.params["export.escalation_step"] == "5" and pushed.params["export.dynamo"] == "true"
    assert pushed.params["checks.axis_sizes.seq_len"] == "8,24" and pushed.tags["atlas.check.dynamic_axes"] == "passed"
    verified = run([sys.executable, "-m", "ml_atlas_sdk.cli", "verify", upload["run_id"], "--tracking-uri", uri], project)
    assert verified.returncode == 0 and verified.stderr.strip() == ""


def test_pipeline_per_output_tolerances(project):
    meta = th.two_output_metadata("offset")
    own = {"shifted": {"atol": 0.2, "max_nrmse": 1.0}}
    _use(project, "OffsetUnderExport", meta, roundtrip={"tolerances": own})
    run(["dvc", "repro"], project, timeout=900)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    params = MlflowClient(uri).get_run(_report(project, "upload")["run_id"]).data.params
    assert (params["roundtrip.shifted.atol"], params["roundtrip.logits.atol"]) == ("0.2", "0.05")

    # The converse: a global pair that would pass, an own atol that does not.
    set_params(project, roundtrip={"atol": 0.2, "max_nrmse": 1.0, "tolerances": {"shifted": {"atol": 0.01}}})
    run(["dvc", "repro", "roundtrip"], project, timeout=900)
    checks = {c["name"]: c for c in _report(project, "roundtrip")["checks"]}
    assert checks["roundtrip"]["verdict"] == "failed"
    assert checks["roundtrip"]["message"].startswith("shifted:") and "logits:" not in checks["roundtrip"]["message"]

    set_params(project, roundtrip={"tolerances": {"logitz": {"atol": 1.0}}})
    bad = run(["dvc", "repro", "roundtrip"], project, check=False, timeout=900)
    assert "roundtrip.tolerances: ['logitz'] not in metadata.output_names" in bad.stderr
