"""sample_invariance on real exports: stable graphs pass, sample-dependent control flow warns."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.export.attempt import export_onnx
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.steps.invariance import invariance_step

META = ModelMetadata(model_name="branchy", input_names=["x"], output_names=["y"], input_shapes={"x": [-1, 4]},
                     output_shape={"y": [-1, 4]}, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # tracing freezes whichever branch the export sample takes
            return torch.relu(self.linear(x))
        return torch.tanh(self.linear(x))


class Stable(Branchy):
    def forward(self, x):
        return torch.relu(self.linear(x))


def _inputs() -> dict[str, torch.Tensor]:
    positive = torch.rand(8, 4) + 0.5
    return {"x": torch.cat([positive, -positive])}  # first half sums > 0, second half < 0


def test_sample_dependent_control_flow_warns_naming_the_op_type(tmp_path):
    report = invariance_step(Branchy(), _inputs(), META, ExportSettings(batch_size=8), SkipPolicy([]), tmp_path)
    (result,) = report.checks
    assert result.verdict.value == "warned"
    assert "Relu" in result.message and "Tanh" in result.message
    assert result.details["hash_a"] != result.details["hash_b"]


def test_stable_model_gives_identical_hashes(tmp_path):
    report = invariance_step(Stable(), _inputs(), META, ExportSettings(batch_size=8), SkipPolicy([]), tmp_path)
    (result,) = report.checks
    assert result.verdict.value == "passed" and result.details["identical"]


def test_skipped_by_configuration(tmp_path):
    report = invariance_step(Branchy(), _inputs(), META, ExportSettings(batch_size=8), SkipPolicy(["sample_invariance"]), tmp_path)
    assert report.checks[0].verdict.value == "skipped"


@pytest.mark.parametrize("model, verdict", [(Branchy(), "warned"), (Stable(), "passed")])
def test_the_accepted_export_is_one_of_the_two_graphs(model, verdict, tmp_path):
    """Traced on the positive rows and reused as slice a: one export here, the negative rows are slice b."""
    accepted = tmp_path / "accepted" / "model.onnx"
    export_onnx(model, {"x": _inputs()["x"][:8]}, META, ExportSettings(batch_size=8), accepted)
    report = invariance_step(model, _inputs(), META, ExportSettings(batch_size=8), SkipPolicy([]), tmp_path / "work",
                             (accepted, list(range(8))))
    (result,) = report.checks
    assert result.verdict.value == verdict and report.metrics["exports"] == 1
    assert not (tmp_path / "work" / "a").exists() and (tmp_path / "work" / "b" / "model.onnx").is_file()
