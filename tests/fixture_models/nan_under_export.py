"""A model whose ONNX output is NaN while PyTorch's is finite: the NaN is added only under export.

`abs_err > atol + rtol*|ref|` is False for NaN, so an unguarded comparison passes this model.
"""
import torch
from torch import nn
from fixture_models.single_io import single_io_metadata

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
    return single_io_metadata("nan_under_export", "x", [-1, FEATURES], [-1, CLASSES], "linear",
                              input_dtypes={"x": "float32"})
