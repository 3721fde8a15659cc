"""Stage reports: `reports/<stage>.json` (DVC metrics) and the console summary."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_atlas_sdk.checks.result import CheckResult
from ml_atlas_sdk.errors import AtlasInputError

REPORTS_DIR = Path("reports")


@dataclass
class StageReport:
    stage: str
    checks: list[CheckResult] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None  # the step's work, set by stop(); start-up and imports are not in it
    started: float = field(default_factory=time.perf_counter, repr=False)

    def stop(self) -> "StageReport":
        if self.seconds is None:
            self.seconds = round(time.perf_counter() - self.started, 3)
        return self

    def add(self, result: CheckResult) -> CheckResult:
        self.checks.append(result)
        return result

    def to_dict(self) -> dict[str, Any]:
        # `verdicts` and `metrics` are flat enough for `dvc exp show` columns; `checks` holds the
        # full results (messages, details) for people and for the upload gate.
        return {
            "verdicts": {c.label: c.verdict.value for c in self.checks},
            "metrics": self.metrics,
            "checks": [c.to_dict() for c in self.checks],
            **self.extra,
            **({"seconds": self.seconds} if self.seconds is not None else {}),
        }

    def write(self, reports_dir: Path = REPORTS_DIR) -> Path:
        return write_json(reports_dir / f"{self.stage}.json", self.to_dict())

    def summary_lines(self) -> list[str]:
        width = max((len(c.label) for c in self.checks), default=0)
        return [f"  {c.label:<{width}}  {c.verdict.value:<7}  {c.message}" for c in self.checks]

    def print_summary(self) -> None:
        """The stage's name and time, then one line per check."""
        took = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
        print(f"[{self.stage}] {len(self.checks)} check(s){took}", flush=True)
        for line in self.summary_lines():
            print(line, flush=True)


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically, with non-finite floats as strings so the file stays valid JSON."""
    return write_text_atomic(path, json.dumps(_json_safe(payload), indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `path` whole or not at all: a temp file beside it (one per process, so concurrent
    writers never share one), then a rename; a reader never sees half a file, and a failed write
    leaves the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_report(stage: str, reports_dir: Path = REPORTS_DIR) -> dict[str, Any]:
    path = reports_dir / f"{stage}.json"
    if not path.is_file():
        raise AtlasInputError(f"{path} is missing: run `dvc repro {stage}` first")
    report = json.loads(path.read_text())
    if report.get("status") == "error":  # the stage stopped on the user's model code: no verdicts to trust
        raise AtlasInputError(f"{path}: the stage stopped ({report['error']['message'][:200]}); fix it and run `dvc repro {stage}`")
    return report


def as_written(results: list[CheckResult]) -> list[CheckResult]:
    """Results exactly as a report file stores them (JSON types), so in-memory and on-disk agree."""
    return [CheckResult.from_dict(json.loads(json.dumps(_json_safe(r.to_dict())))) for r in results]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
