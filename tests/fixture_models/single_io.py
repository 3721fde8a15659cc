"""The metadata of a fixture model with one input and one output, both batched on axis 0."""
from __future__ import annotations


def single_io_metadata(model_name: str, input_name: str, input_shape: list[int], output_shape: list[int],
                       architecture: str, **extra) -> dict:
    return {
        "model_name": model_name,
        "input_names": [input_name],
        "output_names": ["logits"],
        "input_shapes": {input_name: input_shape},
        "output_shape": {"logits": output_shape},
        "dynamic_axes": {input_name: {0: "batch"}, "logits": {0: "batch"}},
        "onnx_opset": 17,
        "architecture": architecture,
        "task_type": "classification",
        **extra,
    }
