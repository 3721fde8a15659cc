"""`precision_hints` in metadata.json: the modules, and the ONNX nodes they became, that atlas
should keep in FP32.

A module is hinted when its own outputs (or a parameter or buffer it holds) are beyond FP16's
safe range or flush to zero in it, or when it is the first module whose half-precision output
departs from FP32. A flagged module whose flagged descendant already explains it (a container
returning its child's output) is left out, so atlas pins the layer that makes the value, not the
whole block around it.

ONNX nodes are found by the module scopes the exporters record (localize.onnx_side.node_scope:
TorchScript node names, dynamo's `pkg.torch.onnx.name_scopes` metadata). Nodes with neither
(constants, fused nodes) map to nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import onnx

from ml_atlas_sdk.localize.onnx_side import node_scope

HINTS = "precision_hints"  # the precision report's key both doors read the hints from


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
    modules = list(hints["modules"])
    # node_scope walks a node's scope names down the module tree it is given: the hinted modules
    # and their ancestors suffice, and a node of any other module stops at one of those ancestors.
    known = {path[:i] for path in modules for i in [len(path)] + [j for j, c in enumerate(path) if c == "."]}
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    nodes = [node.name for node in graph.node if node.name and _within(node_scope(node, known), modules)]
    return {"modules": modules, "onnx_nodes": nodes}


def _within(scope: str | None, modules: Sequence[str]) -> bool:
    return scope is not None and any(scope == m or scope.startswith(m + ".") for m in modules)
