"""Figures 5 and 7: a model past the external-data limit end to end, and what each exporter costs
per zoo model (what the ladder's last step, dynamo, adds)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from measure import REPO, Figure, at_most, make_project_copy, measure, python, reported, set_params

# Child process: export one zoo model with both exporters on 32 rows; prints seconds per exporter
# (or the one-line reason an exporter cannot export it).
_EXPORT = """
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from zoo.cases import BY_NAME, _as_model_input
from ml_atlas_sdk.export.attempt import ExportFailed, export_onnx
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.settings import ExportSettings
case = BY_NAME[sys.argv[2]]
meta = ModelMetadata(**case.metadata)
sample = {n: _as_model_input(v[:32], case.metadata, n) for n, v in case.inputs().items()}
model = case.model()
out = {}
for dynamo in (False, True):
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        try:
            export_onnx(model, sample, meta, ExportSettings(dynamo=dynamo, batch_size=32), Path(tmp) / "model.onnx")
            out["dynamo" if dynamo else "torchscript"] = time.perf_counter() - start
        except ExportFailed as exc:
            out["dynamo" if dynamo else "torchscript"] = exc.summary
print(json.dumps(out))
"""

_BIG_MODEL = """
import torch


def build(width: int, layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh())
                                 for _ in range(layers)])
"""
_BIG_DATA = """
import sys
import numpy as np, pandas as pd
from ml_atlas_sdk.tensors import write_frame
width, path = int(sys.argv[1]), sys.argv[2]
write_frame(pd.DataFrame({"x": list(np.random.default_rng(0).normal(size=(64, width)).astype(np.float32))}), path)
"""
WIDTH = 2048


def export_figures(quick: bool) -> list[Figure]:
    names = ("lstm",) if quick else ("bert", "gpt2_mask", "vit", "torch_encoder", "lstm", "gru", "bag_ranker",
                                            "convnet")
    figures = []
    with tempfile.TemporaryDirectory(prefix="atlas-bench-export-") as tmp:
        for name in names:
            secs = json.loads(measure(python(_EXPORT, str(REPO / "tests"), name), Path(tmp)).stdout)
            failed = {k: v for k, v in secs.items() if isinstance(v, str)}
            if failed:  # the ladder's reason to exist: one exporter cannot take this model
                worked = next((k for k in secs if k not in failed), None)
                figures.append(reported(f"export {name}: {worked or 'neither'} only", secs.get(worked, 0.0), " s",
                                        note="; ".join(f"{k} fails: {v}"[:70] for k, v in failed.items())))
                continue
            figures.append(reported(f"export {name}: dynamo / torchscript", secs["dynamo"] / secs["torchscript"], "x",
                                    note=f"{secs['torchscript']:.1f} s vs {secs['dynamo']:.1f} s"))
    return figures


def big_model_figures(quick: bool) -> list[Figure]:
    """`dvc repro` + verify of an MLP with weights in model.onnx.data. Full: over 2 GB (protobuf's
    limit). Quick: 16 MB with export.external_data_above_mb at 4, the same code path."""
    size_mb, limit_mb = (16, 4) if quick else (2300, 2048)
    layers = max(1, round(size_mb * 2**20 / (WIDTH * WIDTH * 4)))
    weights_mb = layers * WIDTH * (WIDTH + 1) * 4 / 2**20
    with tempfile.TemporaryDirectory(prefix="atlas-bench-big-") as tmp:
        project = make_project_copy(Path(tmp) / "project")
        (project / "models" / "big_mlp.py").write_text(_BIG_MODEL)
        measure(python(_BIG_DATA, str(WIDTH), "data/big_inputs.parquet"), project)
        set_params(
            project,
            model={"name": "big_mlp", "factory": "big_mlp:build", "kwargs": {"width": WIDTH, "layers": layers},
                   "weights": None, "checkpoint": None, "code_dirs": ["models"]},
            metadata={"model_name": "big_mlp", "input_names": ["x"], "output_names": ["y"],
                      "input_shapes": {"x": [-1, WIDTH]}, "output_shape": {"y": [-1, WIDTH]},
                      "dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}, "input_dtypes": None,
                      "architecture": "mlp", "task_type": "regression"},
            data={"val_inputs": "data/big_inputs.parquet", "val_outputs": None, "calibration_inputs": None},
            export={"batch_size": 16, "external_data_above_mb": limit_mb},
            escalation={"enabled": False}, archdoc={"source": None},
        )
        repro = measure(["dvc", "repro"], project)
        run_id = json.loads((project / "reports" / "upload.json").read_text())["run_id"]
        verify = measure(["atlas-bundle", "verify", run_id, "--tracking-uri", f"sqlite:///{project / 'mlflow.db'}"],
                         project)
        external = (project / "build" / "bundle" / "atlas" / "model.onnx.data").is_file()
    peak = max(repro.peak_mb, verify.peak_mb)
    return [
        at_most(f"model of {weights_mb:.0f} MB: peak RSS / model size", peak / weights_mb, 2.5,
                note=f"{peak:.0f} MB, {repro.seconds + verify.seconds:.0f} s repro+verify"),
        Figure("big model: weights in model.onnx.data", float(external), "", "1", external),
    ]
