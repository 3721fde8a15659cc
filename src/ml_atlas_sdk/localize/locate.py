"""Where a failed round-trip first goes wrong: each module's output in PyTorch against the ONNX value
its scope ends with, in graph order, on a few of the rows that failed.

A value is out of tolerance by the round-trip's rule, with atol scaled down to the value's own
magnitude (see scaled_tolerance). A module's ONNX counterpart is the output of the last node in its scope (its own nodes and its
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

from ml_atlas_sdk.compare import Tolerance, as_float64, compare_arrays, out_of_tolerance, problem
from ml_atlas_sdk.localize.onnx_side import intermediate_values, node_scope, op_source
from ml_atlas_sdk.localize.report import describe, not_run
from ml_atlas_sdk.localize.torch_side import ModuleCall, module_calls, module_source
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import as_torch
from ml_atlas_sdk.ort_engine import ONNX, PYTORCH
from ml_atlas_sdk.tensors import slice_rows
from ml_atlas_sdk.user_errors import describe as describe_exception

MAX_SUSPECTS = 12  # ops listed between the last agreeing value and the first disagreeing one
_NO_VALUE = {"Constant"}  # never a module's output
_ERROR_KEYS = ("max_abs_err", "out_of_tol", "frac_out_of_tol", "non_finite_mismatch", "atol")


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
        found = localize(get_model(), onnx_path, as_torch(inputs), rows, metadata, tol)
    except Exception as exc:  # a diagnosis must never hide the verdict it explains
        found = {"status": "error", "rows": rows}
        found["message"] = f"localization failed: {describe_exception(exc)}"
    found["seconds"] = round(time.perf_counter() - started, 3)
    return found


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
    takers: dict[int, list[ModuleCall]] = {}  # tensor id -> the calls it was given to
    for call in calls.values():
        for given in call.input_ids:
            takers.setdefault(given, []).append(call)
    matched = sorted(
        (last[path], call.order, path, _through_folded(call, takers, last))
        for path, call in calls.items() if path in last and call.output is not None
    )
    values = intermediate_values(onnx_path, [nodes[i].output[0] for i, *_ in matched],
                                 {n: sample[n].numpy() for n in metadata.input_names})
    trail = []
    for index, _, path, (torch_call, folded) in matched:
        onnx_value = values[nodes[index].output[0]]
        if tuple(onnx_value.shape) != tuple(torch_call.output.shape):
            continue  # the scope's last node is not what the module returned
        value_tol = scaled_tolerance(torch_call.output, tol)
        metrics = {**compare_arrays(onnx_value, torch_call.output, value_tol), "atol": value_tol.atol}
        trail.append(_entry(len(trail), index, nodes[index], path, model, folded, metrics, calls[path]))
    return {**_verdict(trail, nodes, scopes, model), "rows": list(rows), "trail": [_plot_row(e) for e in trail]}


def scaled_tolerance(reference: torch.Tensor, tol: Tolerance) -> Tolerance:
    """The round-trip's tolerance for a value inside the network: atol is in the outputs' units, so
    a value whose elements are all about 0.01 could be half wrong within atol=0.05. There atol
    shrinks to rtol times the value's RMS; it never grows, so what fails the outputs' test fails here."""
    ref = as_float64(reference)
    finite = ref[np.isfinite(ref)]
    rms = float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0
    return Tolerance(rtol=tol.rtol, atol=min(tol.atol, tol.rtol * rms))


def _verdict(trail: list[dict[str, Any]], nodes, scopes, model: torch.nn.Module) -> dict[str, Any]:
    """The first compared value out of tolerance, the one just before it and the ops in between;
    or, when every one agrees, the last of them and the ops after it."""
    first = next((k for k, e in enumerate(trail) if e["metrics"]["out_of_tol"]), None)
    if first is None:
        found: dict[str, Any] = {"status": "not_found", "compared": len(trail), "before": _public(trail[-1]) if trail else None}
        # No module's output disagrees: what is left is the code outside them (the forward of a model
        # with several outputs, which is not compared as one module).
        compared = [e["module"] for e in trail]
        found["suspect_ops"] = _ops(nodes, scopes, range(len(nodes)), lambda scope: scope is not None and not any(map(_within(scope), compared)))
    else:
        before, div = (trail[first - 1] if first else None), trail[first]
        label = div["module"] or type(model).__name__
        found = {"status": "found", "compared": len(trail),
                 "first_divergence": {**_public(div), "op_source": op_source(nodes[div["node_index"]]),
                                      "problem": problem(label, div["metrics"], ONNX, PYTORCH)},
                 "before": _public(before) if before else None}
        # What the diverging module ran since the value compared just before.
        since = range(before["node_index"] + 1 if before else 0, div["node_index"] + 1)
        found["suspect_ops"] = _ops(nodes, scopes, since, lambda scope: _within(scope)(div["module"]))
    found["message"] = describe(found)
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


def _through_folded(call: ModuleCall, takers: Mapping[int, list[ModuleCall]],
                    last: Mapping[str, int]) -> tuple[ModuleCall, list[str]]:
    """Follow modules with no ONNX node of their own that took this module's output (a BatchNorm the
    exporter folded into the Conv before it): the node computes what the last of them returned."""
    folded = []
    while True:
        taker = next((c for c in takers.get(call.output_id, []) if c.path not in last and c.output is not None
                      and c.order > call.order), None)
        if taker is None:
            return call, folded
        if not torch.equal(taker.output, call.output):  # an Identity or Dropout changes nothing worth naming
            folded.append(taker.path)
        call = taker


def _entry(depth, index, node, path, model, folded, metrics, call) -> dict[str, Any]:
    module = model.get_submodule(path)
    return {"depth": depth, "node_index": index, "module": path, "module_type": type(module).__name__,
            "source": module_source(module, call), "folded": folded, "onnx_node": node.name or node.output[0],
            "op_type": node.op_type, "onnx_value": node.output[0], "metrics": metrics}


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as reports show it: where it is and its error, flat."""
    shown = {k: v for k, v in entry.items() if k not in ("node_index", "metrics")}
    return {**shown, **{k: entry["metrics"][k] for k in _ERROR_KEYS}}


def _within(scope: str | None) -> Callable[[str], bool]:
    """Whether a node of `scope` ran inside the module at a given path ("" holds every scoped node)."""
    return lambda path: scope is not None and (not path or scope == path or scope.startswith(path + "."))


def _ops(nodes, scopes, indices, keep: Callable[[str | None], bool]) -> list[dict[str, Any]]:
    picked = [{"onnx_node": nodes[i].name, "op_type": nodes[i].op_type, "module": scopes[i], "op_source": op_source(nodes[i])}
              for i in indices if nodes[i].op_type not in _NO_VALUE and keep(scopes[i])]
    return picked[:MAX_SUSPECTS]


def _plot_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("depth", "module", "onnx_node", "op_type")} | {k: entry["metrics"][k] for k in _ERROR_KEYS}
