"""Readable where people look (issue 23, item 8): the verdict table wraps instead of cutting, the
exporters' errors carry no terminal colour codes, a torch layer is localized to the model's line
that calls it, and the error pictures draw the tolerance they were judged against."""
from __future__ import annotations

import inspect

import pytest
import torch

from ml_atlas_sdk.checks.result import CheckResult, Verdict
from ml_atlas_sdk.export.attempt import ExportFailed, export_onnx
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.localize.torch_side import forward_source, module_calls, module_source
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.pipeline.summary import summary_table
from ml_atlas_sdk.run_record import error_figure, judged_tolerances

META = ModelMetadata(model_name="m", input_names=["x"], output_names=["y"], input_shapes={"x": [-1, 3]},
                     output_shape={"y": [-1, 2]}, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, onnx_opset=17,
                     architecture="mlp", task_type="t")


class CallsALinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x) * 2  # the model's own line for 'fc'


class ColouredFailure(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("\x1b[31mUnsupported\x1b[0m op \x1b[1maten::thing\x1b[0m")


def test_a_long_message_is_wrapped_whole():
    message = "input 'mask': " + " ".join(f"word{i}" for i in range(60)) + " mask.sum(dim=1) is the end"
    table = summary_table([CheckResult("forward_scan", Verdict.WARNED, message)], width=60)
    lines = table.splitlines()[2:]
    assert len(lines) > 1 and all(len(line) <= 60 + 30 for line in lines)
    assert " ".join(line.split("  ")[-1].strip() for line in lines).endswith("mask.sum(dim=1) is the end")
    assert "..." not in table


def test_exporter_errors_lose_terminal_colour_codes(tmp_path):
    with pytest.raises(ExportFailed) as failed:
        export_onnx(ColouredFailure(), {"x": torch.ones(2, 3)}, META, ExportSettings.from_config({"batch_size": 2}),
                    tmp_path / "model.onnx")
    assert "\x1b" not in failed.value.summary and "\x1b" not in failed.value.log
    assert "Unsupported op aten::thing" in failed.value.summary


def test_a_torch_layer_is_named_by_the_line_that_calls_it():
    model = CallsALinear()
    calls = module_calls(model, [torch.ones(2, 3)], {"", "fc"})
    line = next(n for n, text in enumerate(inspect.getsourcelines(CallsALinear.forward)[0]) if "self.fc(x)" in text)
    called_at = inspect.getsourcelines(CallsALinear.forward)[1] + line
    assert module_source(model.fc, calls["fc"]).endswith(f"test_readable.py:{called_at}")  # not torch/nn/modules/linear.py
    assert module_source(model, calls[""]) == forward_source(model)  # the model's own class: its forward


def test_error_pictures_draw_the_tolerance_judged_against():
    roundtrip = CheckResult("roundtrip", Verdict.PASSED, "ok", {"tolerances": {"y": {"rtol": 0.01, "atol": 0.05}}})
    drift = CheckResult("drift", Verdict.PASSED, "ok", {"tolerance_max_abs": 0.2, "outputs": {"y": {}}})
    tolerances = judged_tolerances([roundtrip, drift])
    for stage, limit in (("roundtrip", 0.05), ("drift", 0.2)):
        figure = error_figure(stage, {"y": [(0.0, 1e-7), (100.0, 1e-3)]}, tolerances[stage])
        dashed = [line for line in figure.axes[0].lines if line.get_linestyle() == "--"]
        assert [list(line.get_ydata()) for line in dashed] == [[limit, limit]]
