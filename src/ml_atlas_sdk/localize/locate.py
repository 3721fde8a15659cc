"""Where a failed round-trip first goes wrong: each module's output in PyTorch against the ONNX value
its scope ends with, in graph order, on a few of the rows that failed.

A module's ONNX counterpart is the output of the last node in its scope (its own nodes and its
children's). The TorchScript exporter folds a BatchNorm into the Conv before it, so the Conv's
node then computes what the BatchNorm returned: a module with no nodes that took a compared
module's output is followed, and its output is what that node is compared with.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch

from ml_atlas_sdk.compare import Tolerance, compare_arrays, out_of_tolerance, problem
from ml_atlas_sdk.localize.onnx_side import intermediate_values, node_scope, op_source
from ml_atlas_sdk.localize.report import describe
from ml_atlas_sdk.localize.torch_side import ModuleCall, forward_source, module_calls
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.ort_engine import ONNX, PYTORCH
from ml_atlas_sdk.tensors import slice_rows
from ml_atlas_sdk.user_errors import describe as describe_exception

MAX_SUSPECTS = 12  # ops listed between the last agreeing value and the first disagreeing one
_NO_VALUE = {"Constant"}  # never a module's output
_ERROR_KEYS = ("max_abs_err", "out_of_tol", "frac_out_of_tol", "non_finite_mismatch")


def not_run(reason: str) -> dict[str, Any]:
    return {"status": "not_run", "message": reason}


def localize_failure(
    get_model: Callable[[], torch.nn.Module],
    onnx_path,
    inputs: dict[str, torch.Tensor],
    actual: Mapping[str, np.ndarray],
    reference: Mapping[str, torch.Tensor],
    metadata: ModelMetadata,
    tol: Tolerance,
    max_rows: int,
) -> dict[str, Any]:
    """Localize a round-trip that failed, on up to `max_rows` of the rows whose outputs disagree.

    Never raises: a localization that cannot run says why in its `message`.
    """
    if max_rows == 0:
        return not_run("roundtrip.localize_rows is 0")
    rows = failing_rows(actual, reference, tol, max_rows)
    if not rows:
        return not_run("every output agrees on every row: only the batch-size probe failed")
    started = time.perf_counter()
    try:
        found = localize(get_model(), onnx_path, inputs, rows, metadata, tol)
    except Exception as exc:  # a diagnosis must never hide the verdict it explains
        found = {"status": "error", "rows": rows}
        found["message"] = f"localization failed: {describe_exception(exc)}"
    found["seconds"] = round(time.perf_counter() - started, 3)
    return found


def without_trail(found: dict[str, Any]) -> dict[str, Any]:
    """The localization without its per-value trail (the plot's data), for logs and check details."""
    return {k: v for k, v in found.items() if k != "trail"}


def failing_rows(actual: Mapping[str, np.ndarray], reference: Mapping[str, torch.Tensor], tol: Tolerance,
                 limit: int) -> list[int]:
    """The first `limit` rows on which some output is out of tolerance (NaN/Inf mismatches included)."""
    bad = None
    for name, ref in reference.items():
        values = actual.get(name)
        if values is None or tuple(values.shape) != tuple(ref.shape):
            continue
        mask = out_of_tolerance(values, ref, tol).reshape(ref.shape[0], -1).any(axis=1)
        bad = mask if bad is None else bad | mask
    return [] if bad is None else np.flatnonzero(bad)[:limit].tolist()


def localize(model: torch.nn.Module, onnx_path, inputs: dict[str, torch.Tensor], rows: Sequence[int],
             metadata: ModelMetadata, tol: Tolerance) -> dict[str, Any]:
    nodes = list(onnx.load(str(onnx_path), load_external_data=False).graph.node)
    modules = {name for name, _ in model.named_modules()}
    scopes = [node_scope(n, modules) for n in nodes]
    last = _last_node_of_each_module(nodes, scopes)
    sample = slice_rows(inputs, rows)
    calls = module_calls(model, [sample[n] for n in metadata.input_names], modules)
    matched = sorted(
        (last[path], call.order, path, _through_folded(call, calls, last))
        for path, call in calls.items() if path in last and call.output is not None
    )
    values = intermediate_values(onnx_path, [nodes[i].output[0] for i, *_ in matched],
                                 {n: sample[n].numpy() for n in metadata.input_names})
    trail = []
    for index, _, path, (torch_call, folded) in matched:
        onnx_value = values[nodes[index].output[0]]
        if tuple(onnx_value.shape) != tuple(torch_call.output.shape):
            continue  # the scope's last node is not what the module returned
        metrics = compare_arrays(onnx_value, torch_call.output, tol)
        trail.append(_entry(len(trail), index, nodes[index], path, model, folded, metrics))
    first = next((k for k, e in enumerate(trail) if e["metrics"]["out_of_tol"]), None)
    found: dict[str, Any] = {"status": "found" if first is not None else "not_found", "rows": list(rows),
                             "compared": len(trail)}
    if first is None:
        before = trail[-1] if trail else None
    else:
        before = trail[first - 1] if first > 0 else None
    if first is not None:
        div = trail[first]
        found["first_divergence"] = {**_public(div), "op_source": op_source(nodes[div["node_index"]]),
                                     "problem": problem(div["module"] or type(model).__name__, div["metrics"], ONNX, PYTORCH)}
    found["before"] = _public(before) if before else None
    # What ran between the last agreeing value and the first disagreeing one (or the graph's end).
    found["suspect_ops"] = _suspects(nodes, scopes, before["node_index"] if before else -1,
                                     trail[first]["node_index"] if first is not None else len(nodes) - 1,
                                     trail[first]["module"] if first is not None else None)
    found["message"] = describe(found)
    found["trail"] = [_plot_row(e) for e in trail]
    return found


def _last_node_of_each_module(nodes: Sequence[onnx.NodeProto], scopes: Sequence[str | None]) -> dict[str, int]:
    """Module path -> index of the last node in its scope or its children's (nodes are topologically sorted)."""
    last: dict[str, int] = {}
    for index, (node, scope) in enumerate(zip(nodes, scopes)):
        if scope is None or node.op_type in _NO_VALUE or not node.output:
            continue
        parts = scope.split(".") if scope else []
        for depth in range(len(parts) + 1):
            last[".".join(parts[:depth])] = index
    return last


def _through_folded(call: ModuleCall, calls: Mapping[str, ModuleCall], last: Mapping[str, int]) -> tuple[ModuleCall, list[str]]:
    """Follow modules with no ONNX node of their own that took this module's output (a BatchNorm the
    exporter folded into the Conv before it): the node computes what the last of them returned."""
    folded = []
    while True:
        taker = next((c for c in calls.values() if c.path not in last and c.output is not None
                      and call.output_id in c.input_ids and c.order > call.order), None)
        if taker is None:
            return call, folded
        if not torch.equal(taker.output, call.output):  # an Identity or Dropout changes nothing worth naming
            folded.append(taker.path)
        call = taker


def _entry(depth, index, node, path, model, folded, metrics) -> dict[str, Any]:
    module = model.get_submodule(path)
    return {"depth": depth, "node_index": index, "module": path, "module_type": type(module).__name__,
            "source": forward_source(module), "folded": folded, "onnx_node": node.name or node.output[0],
            "op_type": node.op_type, "onnx_value": node.output[0], "metrics": metrics}


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as reports show it: where it is and its error, flat."""
    shown = {k: v for k, v in entry.items() if k not in ("node_index", "metrics")}
    return {**shown, **{k: entry["metrics"][k] for k in _ERROR_KEYS}}


def _suspects(nodes, scopes, after: int, upto: int, module: str | None) -> list[dict[str, Any]]:
    """Ops after node `after` up to node `upto` inside `module`'s scope (anywhere when None)."""
    picked = []
    for index in range(after + 1, upto + 1):
        node, scope = nodes[index], scopes[index]
        inside = module is None or (scope is not None and (not module or scope == module or scope.startswith(module + ".")))
        if inside and node.op_type not in _NO_VALUE:
            picked.append({"onnx_node": node.name, "op_type": node.op_type, "module": scope, "op_source": op_source(node)})
    return picked[:MAX_SUSPECTS]


def _plot_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("depth", "module", "onnx_node", "op_type")} | {k: entry["metrics"][k] for k in _ERROR_KEYS}
