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

# Child process: one zoo model's TorchScript export, then the roundtrip stage's work but the probes
# (the step function: ORT over every row, the batch-size probe, the comparison and checks, and the
# error-quantile plot data) and the dynamic_axes probes (one forked child: ORT and the eager model at
# a shorter and a longer size of each axis); prints both in seconds.
_AXES = """
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from zoo.cases import BY_NAME, _as_model_input
from ml_atlas_sdk import axis_probe, ort_engine as rt
from ml_atlas_sdk.export.attempt import export_onnx
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import eager_reference, run_canonical
from ml_atlas_sdk.pipeline.plots import write_error_quantiles
from ml_atlas_sdk.settings import ExportSettings, Settings
from ml_atlas_sdk.steps.roundtrip import roundtrip_model
case, rows = BY_NAME[sys.argv[2]], int(sys.argv[3])
meta = ModelMetadata(**case.metadata)
inputs = {n: _as_model_input(np.resize(v, (rows, *v.shape[1:])), case.metadata, n) for n, v in case.inputs().items()}
model = case.model()
canonical = {n: t.numpy() for n, t in run_canonical(model, inputs, meta.input_names, meta.output_names, 256,
                                                      progress=False).items()}
settings = Settings.model_validate({"metadata": meta, "mlflow": {"experiment": "bench"},
                                    "checks": {"skip": ["dynamic_axes"]}})
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "model.onnx"
    export_onnx(model, {n: v[:32] for n, v in inputs.items()}, meta, ExportSettings(batch_size=32), path)
    numpy_inputs = {n: v.numpy() for n, v in inputs.items()}
    start = time.perf_counter()  # the roundtrip stage's work but the probes: ORT, batch probe, checks, plot data
    report, actual = roundtrip_model(path, numpy_inputs, canonical, settings, 32)
    write_error_quantiles(Path(tmp) / "plots", actual, canonical)
    roundtrip = time.perf_counter() - start
    start = time.perf_counter()
    plan = axis_probe.planned_sizes(meta, numpy_inputs, {})
    probes = axis_probe.probe_all(path, meta, numpy_inputs, plan, settings.roundtrip_tolerances, rt.spreads_of(canonical),
                                  eager_reference(model, meta))
    axes = time.perf_counter() - start
print(json.dumps({"roundtrip": roundtrip, "axes": axes, "ok": all(p.ok for p in probes), "sizes": len(probes)}))
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


AXES_ROWS = 2000  # validation rows of a real model's data (the zoo's 96 rows are reported beside)


def dynamic_axes_figures(quick: bool) -> list[Figure]:
    """The dynamic_axes check's cost per zoo model with a dynamic sequence axis, as a share of the
    roundtrip stage's own work on the same export: target <= 0.5x at AXES_ROWS rows. The probes
    cost the same whatever the rows (4 rows per size, in one forked child with its own ORT
    session); at the zoo's 96 rows both sides are mostly fixed costs (fork, ORT session), reported."""
    names = ("lstm",) if quick else ("bert", "gpt2_mask", "lstm", "t5", "llama")
    figures = []
    with tempfile.TemporaryDirectory(prefix="atlas-bench-axes-") as tmp:
        for name in names:
            for rows in ((96,) if quick else (96, AXES_ROWS)):
                secs = json.loads(measure(python(_AXES, str(REPO / "tests"), name, str(rows)), Path(tmp)).stdout)
                label, ratio = f"dynamic_axes {name} x{rows}: probes / roundtrip", secs["axes"] / secs["roundtrip"]
                note = f"{secs['axes']:.2f} s vs {secs['roundtrip']:.2f} s, {secs['sizes']} sizes" + (
                    "" if secs["ok"] else ", FAILED")
                figures.append(at_most(label, ratio, 0.5, note=note) if rows == AXES_ROWS else reported(label, ratio, "x", note))
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
