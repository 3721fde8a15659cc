"""A model whose ONNX output is NaN while PyTorch's is finite: the NaN is added only under export.

`abs_err > atol + rtol*|ref|` is False for NaN, so an unguarded comparison passes this model.
"""
import torch
from torch import nn

FEATURES, CLASSES = 4, 3


class NanUnderExport(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x)
        if torch.onnx.is_in_onnx_export():  # true under both exporters (TorchScript and dynamo)
            logits = logits * float("nan")
        return logits


def build_model() -> NanUnderExport:
    torch.manual_seed(0)
    return NanUnderExport()


def metadata() -> dict:
    return {
        "model_name": "nan_under_export",
        "input_names": ["x"],
        "output_names": ["logits"],
        "input_shapes": {"x": [-1, FEATURES]},
        "output_shape": {"logits": [-1, CLASSES]},
        "dynamic_axes": {"x": {0: "batch"}, "logits": {0: "batch"}},
        "onnx_opset": 17,
        "architecture": "linear",
        "task_type": "classification",
        "input_dtypes": {"x": "float32"},
    }
