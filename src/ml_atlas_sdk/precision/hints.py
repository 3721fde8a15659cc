"""`precision_hints` in metadata.json: the modules, and the ONNX nodes they became, that atlas
should keep in FP32.

A module is hinted when its own outputs (or a parameter or buffer it holds) are beyond FP16's
safe range or flush to zero in it, or when it is the first module whose half-precision output
departs from FP32. A flagged module whose flagged descendant already explains it (a container
returning its child's output) is left out, so atlas pins the layer that makes the value, not the
whole block around it.

ONNX nodes are found by the module scopes the exporters record: the TorchScript exporter names
nodes `/layers.0/scores/MatMul` (the module path, one segment per call level), the dynamo exporter
puts the module paths in the node's `pkg.torch.onnx.name_scopes` metadata. Nodes with neither
(constants, fused nodes) map to nothing.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from pathlib import Path

import onnx

NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def hinted_modules(flagged: Iterable[str], execution_order: Sequence[str]) -> list[str]:
    """The innermost of the flagged modules (not the model itself), in execution order."""
    flagged = {name for name in flagged if name}
    innermost = {name for name in flagged if not any(other.startswith(name + ".") for other in flagged)}
    return [name for name in execution_order if name in innermost]


def owning_module(tensor_name: str) -> str:
    """`encoder.layer.0.weight` -> `encoder.layer.0`."""
    return tensor_name.rpartition(".")[0]


def with_onnx_nodes(hints: dict[str, list[str]] | None, onnx_path: Path) -> dict[str, list[str]] | None:
    """The hints with the ONNX nodes of the hinted modules added (`onnx_nodes`, graph order)."""
    if not hints or not hints.get("modules"):
        return None
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    modules = hints["modules"]
    nodes = [node.name for node in graph.node if node.name and _inside(node_modules(node), modules)]
    return {"modules": list(modules), "onnx_nodes": nodes}


def node_modules(node: onnx.NodeProto) -> list[str]:
    """The module paths a node was exported from, outermost first ("" the model itself)."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)  # the exporter writes a Python list literal
            except (ValueError, SyntaxError):
                return []
            return [str(s) for s in scopes[:-1]]  # the last scope is the op itself
    if node.name.startswith("/"):
        segments = node.name.strip("/").split("/")[:-1]  # the last segment is the op
        return [".".join(segments[: i + 1]) for i in range(len(segments))]
    return []


def _inside(paths: list[str], modules: Sequence[str]) -> bool:
    return any(path == m or path.startswith(m + ".") for path in paths for m in modules)
