"""Static scan of forward() for Python that tracing silently freezes into the graph."""
from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_atlas_sdk.checks.registry import check
from ml_atlas_sdk.checks.result import Finding

if TYPE_CHECKING:  # the scan reads source code; the data-only stages import checks/ without torch
    import torch

# method call -> why tracing gets it wrong
_SUSPECT_METHODS = {
    "item": "turns a tensor into a Python number, frozen as a constant in the traced graph",
    "tolist": "turns a tensor into Python lists, frozen as constants in the traced graph",
    "numpy": "leaves torch; the exporter records the result as a constant",
    "cpu": "device moves in forward() pin the graph to one device",
    "cuda": "device moves in forward() pin the graph to one device",
    "data_ptr": "memory addresses are not part of an ONNX graph",
}
_TENSOR_REDUCTIONS = {"any", "all", "sum", "max", "min", "mean", "item", "nonzero", "numel"}


@dataclass(frozen=True)
class ScanWarning:
    module: str
    file: str
    line: int
    code: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.module}.forward): `{self.code}` {self.why}"


def scan_model(model: torch.nn.Module) -> list[ScanWarning]:
    """Scan forward() of the model class and every submodule class not defined by torch itself."""
    warnings: list[ScanWarning] = []
    seen: set[type] = set()
    for module in model.modules():
        cls = type(module)
        if cls in seen or cls.__module__.startswith("torch."):
            continue
        seen.add(cls)
        warnings.extend(_scan_forward(cls))
    return warnings


def _scan_forward(cls: type) -> list[ScanWarning]:
    forward = cls.__dict__.get("forward")
    if forward is None:
        return []
    try:
        lines, first_line = inspect.getsourcelines(forward)
        file = inspect.getsourcefile(forward) or "<unknown>"
    except (OSError, TypeError):
        return []
    source = textwrap.dedent("".join(lines))
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        why = _suspicion(node)
        if why:
            found.append(ScanWarning(cls.__qualname__, file, first_line + node.lineno - 1, ast.get_source_segment(source, node) or "", why))
    return sorted(found, key=lambda w: w.line)


def _suspicion(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _SUSPECT_METHODS:
        return _SUSPECT_METHODS[node.func.attr]
    if isinstance(node, (ast.If, ast.While, ast.IfExp)) and _depends_on_tensor_values(node.test):
        return "branches on tensor values; tracing keeps only the branch the export sample took"
    return None


def _depends_on_tensor_values(test: ast.AST) -> bool:
    for sub in ast.walk(test):
        if isinstance(sub, ast.Call):
            func = sub.func
            if isinstance(func, ast.Attribute) and func.attr in _TENSOR_REDUCTIONS:
                return True
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch":
                return True
    return False


@check("forward_scan")
def forward_scan(model: torch.nn.Module) -> Finding:
    found = scan_model(model)
    details = {"warnings": [str(w) for w in found]}
    if found:
        head = "; ".join(str(w) for w in found[:3])
        more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
        return Finding(False, f"{len(found)} trace hazard(s) in forward(): {head}{more}", details)
    return Finding(True, "no trace hazards found in forward()", details)
