"""The end-of-run table: every check's verdict and its key numbers, wrapped to the table's width."""
from __future__ import annotations

import textwrap

from ml_atlas_sdk.checks.result import CheckResult

_MARK = {"passed": "ok", "warned": "WARN", "failed": "FAIL", "skipped": "skip"}


def summary_table(results: list[CheckResult], width: int = 100) -> str:
    """A message longer than `width` continues on the next lines under its column: cut short, a
    warning lost its point (`mask.s...`)."""
    label_w = max([len(r.label) for r in results] + [5])
    indent = f"{'':<{label_w}}  {'':<7}  "
    lines = [f"{'check':<{label_w}}  {'verdict':<7}  message", f"{'-' * label_w}  -------  {'-' * 40}"]
    for r in results:
        message, localization = r.message, r.details.get("localization") or {}
        located = localization.get("message") if localization.get("status") in ("found", "not_found") else None
        if located:  # where to look gets lines of its own, not the tail of the check's message
            message = message.replace(f" | {located}", "")
        first, *rest = _wrapped(message, width)
        lines.append(f"{r.label:<{label_w}}  {_MARK[r.verdict.value]:<7}  {first}".rstrip())
        lines += [indent + part for part in rest]
        if located:
            lines += [indent + part for part in _wrapped(f"localized: {located}", width)]
    return "\n".join(lines)


def _wrapped(text: str, width: int) -> list[str]:
    # Long names (paths, module paths) stay whole on a line of their own rather than split mid-name.
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]
