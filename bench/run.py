"""The benchmark suite: one line per figure, its target, and ok or MISS (see bench/README.md).

    .venv/bin/python bench/run.py            # full sizes (~1 GB Parquet, 1M rows, a 2.3 GB model)
    .venv/bin/python bench/run.py --quick    # reduced sizes: the smoke test `make test` runs
    .venv/bin/python bench/run.py --only tensorize,pipeline

Targets are ratios measured in one run on one machine, so they compare across machines where
absolute seconds do not.
"""
from __future__ import annotations

import argparse
import sys
import time

from figures_data import memory_figures, tensorize_figures
from figures_models import big_model_figures, dynamic_axes_figures, export_figures
from figures_pipeline import experiment_figures, pipeline_figures
from measure import cpu_count

SECTIONS = {
    "tensorize": tensorize_figures,  # 1
    "pipeline": pipeline_figures,  # 2 and 3
    "memory": memory_figures,  # 4
    "big_model": big_model_figures,  # 5
    "experiments": experiment_figures,  # 6
    "export": export_figures,  # 7
    "dynamic_axes": dynamic_axes_figures,  # 8
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    print(f"# bench/run.py{' --quick' if args.quick else ''} on {cpu_count()} core(s)", flush=True)
    missed = 0
    for name in chosen:
        started = time.perf_counter()
        print(f"## {name}", flush=True)
        for figure in SECTIONS[name](args.quick):
            print(figure.line(), flush=True)
            missed += figure.ok is False
        print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"# {missed} MISS", flush=True)
    return 0  # a MISS is a finding to read, not a crash


if __name__ == "__main__":
    sys.exit(main())
