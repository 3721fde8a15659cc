"""`bench/run.py --quick`: every figure of the benchmark suite runs at reduced sizes and prints its
line (a smoke test: the figures' values are read in bench/README.md, not asserted here)."""
from __future__ import annotations

import re
import sys

from conftest import REPO_ROOT, run

FIGURE = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<value>-?[\d.]+(e[-+]?\d+)?(x| s|))(\s.*)?$")
EXPECTED = {
    "tensorize": 3, "pipeline": 8, "memory": 4, "big_model": 2, "experiments": 1, "export": 1, "dynamic_axes": 1,
}


def test_quick_bench_prints_every_figure_with_its_verdict(tmp_path):
    out = run([sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--quick"], tmp_path, timeout=1200).stdout
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("## "):
            current = line[3:]
            sections[current] = []
        elif current and line and not line.startswith(("   (", "#")):
            sections[current].append(line)
    assert {name: len(lines) for name, lines in sections.items()} == EXPECTED, out
    for line in (ln for lines in sections.values() for ln in lines):
        assert FIGURE.match(line), line
        if "target" in line:
            assert line.endswith((" ok", " MISS")), line
    assert re.search(r"^# \d+ MISS$", out, re.M), out
