"""A model that needs ONNX opset 18: F.fold exports as Col2Im, which opset 17 lacks.

Tests copy this file into a project's models/ code dir (model.code_dirs) and also import it.
"""
import torch
import torch.nn.functional as F
from torch import nn

PATCH_ROWS, BLOCKS = 4, 4  # C*k*k = 1*2*2 values per block, 4 blocks tile a 4x4 image
OUTPUT_SHAPE = [-1, 1, 4, 4]


class FoldModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(BLOCKS, BLOCKS)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.fold(self.mix(patches), output_size=(4, 4), kernel_size=2, stride=2)


def build_model() -> FoldModel:
    # The stages build the model separately and model.weights is null: the init must repeat.
    torch.manual_seed(0)
    return FoldModel()


def metadata() -> dict:
    return {
        "model_name": "fold_model",
        "input_names": ["patches"],
        "output_names": ["image"],
        "input_shapes": {"patches": [-1, PATCH_ROWS, BLOCKS]},
        "output_shape": {"image": OUTPUT_SHAPE},
        "dynamic_axes": {"patches": {0: "batch"}, "image": {0: "batch"}},
        "onnx_opset": 17,
        "architecture": "fold",
        "task_type": "image",
        "input_dtypes": {"patches": "float32"},
    }
