"""The end-of-run table: every check's verdict and its key numbers, one line each."""
from __future__ import annotations

from ml_atlas_sdk.checks.result import CheckResult

_MARK = {"passed": "ok", "warned": "WARN", "failed": "FAIL", "skipped": "skip"}


def summary_table(results: list[CheckResult], width: int = 100) -> str:
    label_w = max([len(r.label) for r in results] + [5])
    lines = [f"{'check':<{label_w}}  {'verdict':<7}  message", f"{'-' * label_w}  -------  {'-' * 40}"]
    for r in results:
        message = r.message if len(r.message) <= width else r.message[: width - 3] + "..."
        lines.append(f"{r.label:<{label_w}}  {_MARK[r.verdict.value]:<7}  {message}")
        localization = r.details.get("localization") or {}
        if localization.get("status") in ("found", "not_found"):  # never cut short: it is where to look
            lines.append(f"{'':<{label_w}}  {'':<7}  localized: {localization['message']}")
    return "\n".join(lines)
