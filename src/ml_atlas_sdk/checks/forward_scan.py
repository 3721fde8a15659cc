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
    sizes = _size_names(tree)
    found = []
    for node in _reachable(tree):
        why = _suspicion(node, sizes)
        if why:
            anchor = node.iter if isinstance(node, (ast.For, ast.comprehension)) else node  # the line, not the body
            code = ast.get_source_segment(source, anchor) or ""
            found.append(ScanWarning(cls.__qualname__, file, first_line + anchor.lineno - 1,
                                     f"in {code}" if anchor is not node else code, why))
    return sorted(found, key=lambda w: w.line)


def _reachable(tree: ast.AST):
    """Every node, except the branches an exported model provably never takes (eval mode, tracing)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If):
            taken = _export_value(node.test)
            if taken is False:
                children = [node.test, *node.orelse]
            elif taken is True:
                children = [node.test, *node.body]
        stack.extend(reversed(children))


def _export_value(test: ast.AST) -> bool | None:
    """What `test` is under export (True/False), or None when the scan cannot tell."""
    if isinstance(test, ast.Constant):
        return bool(test.value)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _export_value(test.operand)
        return None if inner is None else not inner
    if isinstance(test, ast.Attribute) and test.attr == "training":  # the export runs the model in eval mode
        return False
    if isinstance(test, ast.Call) and _dotted(test.func) in ("torch.jit.is_scripting", "torch.compiler.is_compiling"):
        return False
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_size(node: ast.AST, sizes: set[str]) -> bool:
    """Does `node` compute from a tensor's size (x.shape[1], x.size(1), len(x), x.numel(), a name bound to one)?"""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr == "shape":
            return True
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Attribute) and sub.func.attr in ("size", "numel", "dim"):
                return True
            if isinstance(sub.func, ast.Name) and sub.func.id == "len":
                return True
        if isinstance(sub, ast.Name) and sub.id in sizes:
            return True
    return False


def _size_names(tree: ast.AST) -> set[str]:
    """Names assigned from a tensor's size (`B, T, _ = x.shape`, `n = x.size(1)`), to a fixed point."""
    sizes: set[str] = set()
    assigns = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)]
    while True:
        before = len(sizes)
        for node in assigns:
            if _is_size(node.value, sizes):
                for target in node.targets:
                    sizes.update(t.id for t in ast.walk(target) if isinstance(t, ast.Name))
        if len(sizes) == before:
            return sizes


_SPLITTING = {"unbind", "split", "chunk", "tensor_split"}


def _suspicion(node: ast.AST, sizes: set[str]) -> str | None:
    if isinstance(node, (ast.For, ast.comprehension)) and _loops_over_size(node.iter, sizes):
        return "loops over a tensor's size; tracing unrolls the loop for the export sample's length"
    if isinstance(node, ast.Call):
        name = _dotted(node.func)
        if name == "torch.onnx.is_in_onnx_export":
            return "export-only code: the exported graph runs what PyTorch does not, so PyTorch cannot vouch for it"
        if name in ("torch.tensor", "torch.as_tensor") and any(_is_size(a, sizes) for a in node.args):
            return "makes a tensor from a size, a constant in the traced graph"
        if isinstance(node.func, ast.Attribute) and node.func.attr in _SUSPECT_METHODS:
            return _SUSPECT_METHODS[node.func.attr]
    if isinstance(node, (ast.If, ast.While, ast.IfExp)) and _depends_on_tensor_values(node.test):
        return "branches on tensor values; tracing keeps only the branch the export sample took"
    return None


def _loops_over_size(iterable: ast.AST, sizes: set[str]) -> bool:
    if isinstance(iterable, ast.Call):
        name = _dotted(iterable.func)
        if name in ("range", "enumerate", "zip", "reversed"):
            return any(_loops_over_size(a, sizes) or (name == "range" and _is_size(a, sizes)) for a in iterable.args)
        if isinstance(iterable.func, ast.Attribute) and iterable.func.attr in _SPLITTING:
            return True
    return False


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
