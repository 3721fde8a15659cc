"""A localization in one line, for consoles, the end-of-run table and check messages."""
from __future__ import annotations

from typing import Any

SHOWN_SUSPECTS = 6


def not_run(reason: str) -> dict[str, Any]:
    return {"status": "not_run", "message": reason}


def without_trail(found: dict[str, Any]) -> dict[str, Any]:
    """The localization without its per-value trail (the plot's data), for logs and check details."""
    return {k: v for k, v in found.items() if k != "trail"}


def describe(found: dict[str, Any]) -> str:
    """One line saying where ONNX Runtime and PyTorch part ways (or why nobody looked)."""
    if found["status"] == "found":
        div, before = found["first_divergence"], found.get("before")
        error = div["problem"].split(": ", 1)[-1]  # the problem line starts with the module's name, said already
        line = f"first divergence in {_module(div)} at ONNX node {div['onnx_node']!r} ({_op(div['op_type'], div.get('op_source'))}): {error}"
        line += f"; just before, {_module(before, brief=True)} agreed (max_abs_err {before['max_abs_err']:.3g})" if before else ""
        return line + _suspects("ops in between", found.get("suspect_ops"))
    if found["status"] == "not_found":
        last = found.get("before")
        if not last:
            return "no ONNX value could be matched to a module's output, so nothing inside the network was compared"
        return (f"all {found['compared']} compared module output(s) agree (the last: {_module(last, brief=True)}, "
                f"ONNX node {last['onnx_node']!r}), so the outputs go wrong outside them"
                + _suspects("ops outside every compared module", found.get("suspect_ops")))
    return found["message"]


def _module(entry: dict[str, Any], brief: bool = False) -> str:
    name = f"module {entry['module']!r}" if entry["module"] else "the model itself"
    if brief:
        return name
    where = ", ".join(filter(None, [entry["module_type"], entry.get("source")]))
    folded = ", ".join(repr(f) for f in entry.get("folded") or [])
    return f"{name} ({where}{f'; {folded} folded into its ONNX node' if folded else ''})"


def _op(op_type: str, source: str | None) -> str:
    return f"{op_type} at {source}" if source else op_type


def _suspects(title: str, ops: list[dict[str, Any]] | None) -> str:
    if not ops:
        return ""
    shown = ", ".join(_op(o["op_type"], o.get("op_source")) for o in ops[:SHOWN_SUSPECTS])
    return f"; {title}: {shown}" + (", ..." if len(ops) > SHOWN_SUSPECTS else "")
