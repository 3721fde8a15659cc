"""FP16 / INT8 readiness: a model that overflows FP16 is warned about, named, hinted and still pushed;
a module without a CPU half kernel is named when fp16_roundtrip is skipped; calibration coverage
warns on a narrow calibration sample and passes one from the validation data's distribution."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from fixture_models import fp16_overflow
from ml_atlas_sdk import AtlasArtifactBundle, ModelMetadata, push_to_mlflow
from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.consumer import verify
from ml_atlas_sdk.models import run_canonical
from ml_atlas_sdk.settings import PrecisionSettings
from ml_atlas_sdk.steps.precision import precision_step

OVERFLOWING = "encoder.layers.0.attention.scores"


@pytest.fixture(scope="module")
def overflow_run(tmp_path_factory):
    """The overflowing model pushed through the SDK door into a local sqlite store."""
    root = tmp_path_factory.mktemp("fp16-store")
    tokens = np.random.default_rng(0).integers(0, fp16_overflow.VOCAB, size=(96, fp16_overflow.SEQ))
    bundle = AtlasArtifactBundle(model=fp16_overflow.build_model(), metadata=ModelMetadata(**fp16_overflow.metadata()),
                                 val_inputs_df=pd.DataFrame({"tokens": list(tokens)}), export_batch_size=32,
                                 architecture_doc=None)
    store = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the embedded store writes artifacts under cwd
        run_id = push_to_mlflow(bundle, None, tracking_uri=store, experiment="fp16")
        atlas = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="atlas", tracking_uri=store,
                                                         dst_path=str(root / "download")))
        yield run_id, store, atlas


def test_fp16_overflow_is_warned_named_hinted_and_still_pushed(overflow_run):
    run_id, store, atlas = overflow_run
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert tags["atlas.bundle_complete"] == "true"
    assert (tags["atlas.check.fp16_range"], tags["atlas.check.fp16_roundtrip"]) == ("warned", "warned")
    checks = {c["name"]: c for c in json.loads((atlas / "validation_report.json").read_text())["checks"]}
    assert f"'{OVERFLOWING}' (Scores) max |x|" in checks["fp16_range"]["message"]
    assert list(checks["fp16_range"]["details"]["over"]) == [OVERFLOWING]  # the embeddings (+-100) fit
    assert checks["fp16_roundtrip"]["message"].endswith(f"first module departing from FP32: '{OVERFLOWING}' (Scores)")
    assert "NaN in FP16 but finite in FP32" in checks["fp16_roundtrip"]["message"]

    hints = json.loads((atlas / "metadata.json").read_text())["precision_hints"]
    assert hints["modules"] == [OVERFLOWING]
    # TorchScript names the nodes by module scope: the unscaled q @ k^T is the MatMul under it.
    assert hints["onnx_nodes"] and all(n.startswith("/encoder/layers.0/attention/scores/") for n in hints["onnx_nodes"])
    assert any(n.endswith("/MatMul") for n in hints["onnx_nodes"])
    assert verify(run_id, store) == []  # the consumer reads metadata.json with its hints


class HardCodedFloat32(nn.Module):
    """Multiplies by a float32 tensor made in forward: fine in FP32, a dtype error under .half()."""

    def forward(self, x):
        return x @ torch.eye(x.shape[-1])


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.mix = HardCodedFloat32()

    def forward(self, x):
        return self.mix(self.proj(x))


def _meta(inputs: dict[str, list[int]], outputs: dict[str, list[int]]) -> ModelMetadata:
    return ModelMetadata(model_name="t", input_names=list(inputs), output_names=list(outputs), input_shapes=inputs,
                         output_shape=outputs, dynamic_axes={n: {0: "batch"} for n in (*inputs, *outputs)},
                         onnx_opset=17, architecture="t", task_type="t")


def test_a_module_that_cannot_run_in_half_is_named_and_the_roundtrip_skipped():
    model, meta = Mixer().eval(), _meta({"x": [-1, 4]}, {"y": [-1, 4]})
    inputs = {"x": torch.randn(10, 4)}
    canonical = run_canonical(model, inputs, ["x"], ["y"], 8, progress=False)
    report = precision_step(model, inputs, canonical, None, meta, PrecisionSettings(), SkipPolicy([]), 4)
    verdicts = report.to_dict()["verdicts"]
    assert (verdicts["fp16_range"], verdicts["fp16_roundtrip"]) == ("passed", "skipped")
    message = report.checks[1].message
    assert message.startswith("'mix' (HardCodedFloat32) cannot run in half precision on CPU: RuntimeError")
    assert next(model.parameters()).dtype == torch.float32  # the caller's model was not turned to half


def _calibration_report(validation: dict[str, torch.Tensor], calibration: dict[str, torch.Tensor]):
    meta = _meta({"dense": [-1, 16], "tokens": [-1, 12]}, {"y": [-1]})
    skip = SkipPolicy(["fp16_range", "fp16_roundtrip"])  # coverage needs no forward pass
    report = precision_step(nn.Identity(), validation, {}, calibration, meta, PrecisionSettings(), skip, 256)
    return report.checks[2]


def _sample(rng, rows: int, spread: float, vocab: int) -> dict[str, torch.Tensor]:
    return {"dense": torch.from_numpy(rng.normal(scale=spread, size=(rows, 16)).astype(np.float32)),
            "tokens": torch.from_numpy(rng.integers(0, vocab, size=(rows, 12)))}


def test_calibration_coverage_warns_on_a_narrow_sample_and_passes_a_representative_one():
    rng = np.random.default_rng(3)
    validation = _sample(rng, 512, 1.0, 1000)
    narrow = _sample(rng, 1024, 0.3, 500)  # a third of the spread, half the ids
    result = _calibration_report(validation, narrow)
    assert result.verdict.value == "warned"
    dense, low, high = validation["dense"], narrow["dense"].min(), narrow["dense"].max()
    outside = float(((dense < low) | (dense > high)).float().mean())
    unseen = float((~torch.isin(validation["tokens"], narrow["tokens"].unique())).float().mean())
    assert f"dense: {outside:.1%} of validation values outside the calibration range" in result.message
    assert f"tokens: {unseen:.1%} of validation values are ids never seen in calibration" in result.message
    assert outside > 0.1 and unseen > 0.3

    representative = _sample(rng, 1024, 1.0, 1000)
    result = _calibration_report(validation, representative)
    assert result.verdict.value == "passed", result.message


def test_hints_map_to_the_nodes_the_dynamo_exporter_made_from_the_module(tmp_path):
    """Dynamo names nodes `node_matmul`; the module path is in the node's name_scopes metadata."""
    import onnx

    from ml_atlas_sdk.localize.onnx_side import NAME_SCOPES
    from ml_atlas_sdk.precision.hints import with_onnx_nodes

    path = tmp_path / "model.onnx"
    torch.onnx.export(fp16_overflow.build_model(), (torch.zeros(2, fp16_overflow.SEQ, dtype=torch.long),), str(path),
                      input_names=["tokens"], output_names=["logits"], opset_version=18, dynamo=True)
    hints = with_onnx_nodes({"modules": [OVERFLOWING]}, path)
    scopes = {n.name: p.value for n in onnx.load(str(path)).graph.node for p in n.metadata_props if p.key == NAME_SCOPES}
    assert hints["modules"] == [OVERFLOWING] and hints["onnx_nodes"]
    assert all(f"'{OVERFLOWING}'" in scopes[name] for name in hints["onnx_nodes"])
    assert {name for name, s in scopes.items() if f"'{OVERFLOWING}'" in s} == set(hints["onnx_nodes"])
