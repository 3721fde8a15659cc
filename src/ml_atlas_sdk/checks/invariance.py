"""sample_invariance: does the exported graph depend on which rows it was traced with?"""
from __future__ import annotations

import hashlib

import onnx
from onnx import helper, numpy_helper

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding

SMALL_TENSOR = 64  # constant attributes this small keep their values: baked-in shapes show up there


def _tensor_sig(t: onnx.TensorProto) -> str:
    dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
    if 0 < len(t.dims) and int(_prod(t.dims)) > SMALL_TENSOR:
        return f"tensor<{dtype}{list(t.dims)}>"
    return f"tensor<{dtype}{list(t.dims)}>={numpy_helper.to_array(t).tolist()}"


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def _attr_sig(a: onnx.AttributeProto) -> str:
    if a.type == onnx.AttributeProto.TENSOR:
        return f"{a.name}={_tensor_sig(a.t)}"
    if a.type == onnx.AttributeProto.GRAPH:
        return f"{a.name}=graph[{graph_hash_of(a.g)}]"
    return f"{a.name}={helper.get_attribute_value(a)!r}"


def node_signature(node: onnx.NodeProto) -> str:
    attrs = ",".join(_attr_sig(a) for a in sorted(node.attribute, key=lambda a: a.name))
    return f"{node.domain}:{node.op_type} {node.name} in={list(node.input)} out={list(node.output)} [{attrs}]"


def graph_signature(graph: onnx.GraphProto) -> list[str]:
    """One line per I/O, initializer (name, dtype, dims; no values) and node, in graph order."""
    lines = [f"input {v.name} {v.type.SerializeToString().hex()}" for v in graph.input]
    lines += [f"output {v.name} {v.type.SerializeToString().hex()}" for v in graph.output]
    lines += [f"init {t.name} {t.data_type} {list(t.dims)}" for t in graph.initializer]
    lines += [node_signature(n) for n in graph.node]
    return lines


def graph_hash_of(graph: onnx.GraphProto) -> str:
    return hashlib.sha256("\n".join(graph_signature(graph)).encode()).hexdigest()


def graph_hash(model: onnx.ModelProto) -> str:
    return graph_hash_of(model.graph)


def _scope(node: onnx.NodeProto) -> str | None:
    for prop in node.metadata_props:  # the dynamo exporter records module scopes here
        if prop.key in ("pkg.torch.onnx.name_scopes", "namespace"):
            return prop.value
    return node.name.rsplit("/", 1)[0] or "/" if "/" in node.name else None


def first_divergence(a: onnx.ModelProto, b: onnx.ModelProto) -> dict | None:
    nodes_a, nodes_b = list(a.graph.node), list(b.graph.node)
    for index, (na, nb) in enumerate(zip(nodes_a, nodes_b)):
        if node_signature(na) != node_signature(nb):
            return {"node_index": index, "op_type": [na.op_type, nb.op_type], "node_name": [na.name, nb.name],
                    "scope": [_scope(na), _scope(nb)]}
    if len(nodes_a) != len(nodes_b):
        longer, which = (nodes_a, 0) if len(nodes_a) > len(nodes_b) else (nodes_b, 1)
        extra = longer[min(len(nodes_a), len(nodes_b))]
        return {"node_index": min(len(nodes_a), len(nodes_b)), "op_type": [extra.op_type] if which == 0 else [None, extra.op_type],
                "node_name": [extra.name], "scope": [_scope(extra)], "node_counts": [len(nodes_a), len(nodes_b)]}
    sig_a, sig_b = graph_signature(a.graph), graph_signature(b.graph)
    for line_a, line_b in zip(sig_a, sig_b):
        if line_a != line_b:
            return {"op_type": [None, None], "first_difference": [line_a[:200], line_b[:200]]}
    return None


@check("sample_invariance")
def sample_invariance(model_a: onnx.ModelProto, model_b: onnx.ModelProto) -> Finding:
    hash_a, hash_b = graph_hash(model_a), graph_hash(model_b)
    details = {"hash_a": hash_a, "hash_b": hash_b, "identical": hash_a == hash_b}
    if hash_a == hash_b:
        return Finding(True, "exports on two disjoint slices give the same graph", details)
    diverged = first_divergence(model_a, model_b) or {}
    details["divergence"] = diverged
    ops = [o for o in diverged.get("op_type", []) if o]
    where = f" at node {diverged['node_index']}" if "node_index" in diverged else ""
    scope = next((s for s in diverged.get("scope", []) if s), None)
    return Finding(False, f"the graph depends on the export sample: divergent op type {' vs '.join(ops) or 'unknown'}{where}"
                          + (f" (scope {scope})" if scope else "")
                          + "; data-dependent Python control flow was frozen by tracing", details)
