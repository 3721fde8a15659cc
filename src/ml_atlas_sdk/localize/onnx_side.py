"""ONNX's side of a localization: the module each node came from, and intermediate values on a few rows.

Both exporters say where a node came from. The TorchScript exporter names nodes by module scope,
`/encoder/layers.3/norm/LayerNormalization`; the dynamo exporter leaves node names bare and writes
the scopes into the node's metadata (`pkg.torch.onnx.name_scopes`), with the Python stack that
emitted it (`pkg.torch.onnx.stack_trace`).
"""
from __future__ import annotations

import ast
import re
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.user_errors import is_user_file, shown_path

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
STACK_TRACE = "pkg.torch.onnx.stack_trace"
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


def metadata_of(node: onnx.NodeProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in node.metadata_props}


def node_scope(node: onnx.NodeProto, modules: Collection[str]) -> str | None:
    """named_modules() path of the innermost module whose forward emitted `node` ("" = the model
    itself); None for nodes with no scope (the TorchScript exporter's initializer copies)."""
    scopes = metadata_of(node).get(NAME_SCOPES)
    if scopes is not None:  # dynamo: ['', 'encoder', 'encoder.layers.3', 'layer_norm'], the FX node's name last
        return resolve(ast.literal_eval(scopes)[:-1], modules)
    if node.name.startswith("/"):  # TorchScript: /encoder/layers.3/norm/LayerNormalization, /blocks/blocks.2/Add
        return resolve(node.name.split("/")[1:-1], modules)
    return None


def resolve(scopes: Sequence[str], modules: Collection[str]) -> str:
    """The module path a list of scope names leads to. Exporters name a scope relative to its parent
    (`norm`), to a container's owner (`layers.3`, `blocks.2`) or in full (dynamo's `encoder.layers.3`):
    each name is looked up under the path so far and then under each of its ancestors. A name that is
    no module (`shared_1`, a module's second call) ends the walk at the deepest module found."""
    path = ""
    for scope in filter(None, scopes):
        found = next((c for base in _self_and_ancestors(path) if (c := f"{base}.{scope}" if base else scope) in modules), None)
        if found is None:
            break
        path = found
    return path


def _self_and_ancestors(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return [".".join(parts[:depth]) for depth in range(len(parts), -1, -1)]


def op_source(node: onnx.NodeProto) -> str | None:
    """`file:line` of the user's code that emitted the node (dynamo exporter only)."""
    frames = [m for m in _FRAME.finditer(metadata_of(node).get(STACK_TRACE, "")) if is_user_file(m["file"])]
    return f"{shown_path(frames[-1]['file'], within_sys_path=True)}:{frames[-1]['line']}" if frames else None


def intermediate_values(onnx_path: Path, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a copy of the model whose graph also outputs `names`; returns every output by name."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    big = any(uses_external_data(t) for t in model.graph.initializer)  # only past 2 GB: see export/attempt.py
    if big:
        load_external_data_for_model(model, str(onnx_path.parent))
    outputs = {o.name for o in model.graph.output}
    # ORT takes an output with no type and works it out itself, so no shape inference is needed.
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in outputs)
    with tempfile.TemporaryDirectory(prefix="atlas-localize-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=big)
        session = rt.cpu_session(path)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, dict(feed))))
