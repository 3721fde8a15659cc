"""Checks on the exported ONNX file itself: what atlas reads before it builds an engine."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding
from ml_atlas_sdk.dtypes import dtype_name
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.secrets import first_line


def model_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@check("onnx_cross_check")
def onnx_cross_check(
    onnx_path: Path, metadata: ModelMetadata, expected_opset: int, val_inputs: Mapping[str, np.ndarray] | None = None
) -> Finding:
    """ONNX checker, I/O names in order, a symbolic (dim_param) batch axis on every I/O, opset, and
    each graph input's dtype equal to what val_inputs.pt holds (the dtype policy's promise)."""
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf's decode errors have no common base worth naming
        unreadable = f"not a readable ONNX model ({first_line(exc)})"
        return Finding(False, unreadable, {"problems": [unreadable]})
    problems: list[str] = []
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except Exception as exc:  # checker raises ValidationError and shape-inference errors
        problems.append(f"onnx.checker: {first_line(exc)}")
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    names = {"inputs": [i.name for i in graph_inputs], "outputs": [o.name for o in model.graph.output]}
    if names["inputs"] != list(metadata.input_names):
        problems.append(f"graph inputs {names['inputs']} differ from metadata.input_names {metadata.input_names}")
    if names["outputs"] != list(metadata.output_names):
        problems.append(f"graph outputs {names['outputs']} differ from metadata.output_names {metadata.output_names}")
    batch_axes = {}
    for value in [*graph_inputs, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        axis0 = dims[0] if dims else None
        batch_axes[value.name] = axis0.dim_param if axis0 is not None and axis0.dim_param else (
            axis0.dim_value if axis0 is not None else None)
        if axis0 is None or not axis0.dim_param:
            problems.append(f"{value.name!r}: axis 0 is {batch_axes[value.name]!r}, not a symbolic batch dim")
    dtypes = graph_input_dtypes(graph_inputs)
    for name, tensor in (val_inputs or {}).items():
        want = dtype_name(tensor)
        if name in dtypes and dtypes[name] != want:
            problems.append(f"graph input {name!r} takes {dtypes[name]} but val_inputs.pt holds {want}")
    opset = model_opset(model)
    # The dynamo exporter may raise the requested opset (its minimum is 18); lower is never right.
    if opset < max(expected_opset, metadata.onnx_opset):
        problems.append(f"opset {opset}, expected at least {expected_opset} (metadata.onnx_opset {metadata.onnx_opset})")
    details = {**names, "batch_axes": batch_axes, "input_dtypes": dtypes, "opset": opset, "problems": problems}
    if problems:
        return Finding(False, "; ".join(problems), details)
    return Finding(True, f"checker ok, names match, dynamic batch on {len(batch_axes)} I/O, opset {opset}", details)


def graph_input_dtypes(graph_inputs) -> dict[str, str]:
    """numpy-style dtype names ("float32", "int64", "bool") of ONNX graph inputs."""
    out = {}
    for value in graph_inputs:
        elem = value.type.tensor_type.elem_type
        try:
            out[value.name] = onnx.helper.tensor_dtype_to_np_dtype(elem).name
        except Exception:  # undefined or exotic element types have no numpy twin
            out[value.name] = onnx.TensorProto.DataType.Name(elem).lower()
    return out
