"""How the benchmark measures: wall time and peak RSS of a child process, project copies, figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))  # project copies and the model zoo are the tests' own

from conftest import make_project_copy, project_env, set_params  # noqa: E402,F401

# Runs `cmd` and prints its wall seconds and its peak RSS: ru_maxrss of the waited-for children
# is per wrapper process, so each measurement gets its own wrapper.
_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "seconds = time.perf_counter() - start\n"
    "peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'rc': proc.returncode, 'seconds': seconds, 'peak_mb': peak_kb / 1024,\n"
    "                  'stdout': proc.stdout[-20000:], 'stderr': proc.stderr[-4000:]}))\n"
)


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float
    stdout: str


def measure(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Measured:
    """Wall seconds and peak RSS (MB) of the largest process `cmd` ran; raises if it failed."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], cwd=cwd, env=env or project_env(),
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result['rc']}: {result['stderr'][-2000:]}")
    return Measured(result["seconds"], result["peak_mb"], result["stdout"])


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


@dataclass(frozen=True)
class Figure:
    """One measured figure against its target; `ok` None means 'reported, no target'."""

    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    def line(self) -> str:
        verdict = "" if self.ok is None else ("ok" if self.ok else "MISS")
        value = f"{self.value:.3g}{self.unit}"
        target = f"target {self.target}" if self.target else ""
        return f"{self.name:<44} {value:>12}  {target:<18} {self.note:<34} {verdict}".rstrip()


def at_most(name: str, value: float, limit: float, unit: str = "x", note: str = "") -> Figure:
    return Figure(name, value, unit, f"<= {limit:g}{unit}", value <= limit, note)


def reported(name: str, value: float, unit: str, note: str = "") -> Figure:
    return Figure(name, value, unit, note=note)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
