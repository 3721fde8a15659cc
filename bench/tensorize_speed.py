"""Tensorize throughput: the Arrow path against the per-row Python loop it replaces.

    .venv/bin/python bench/tensorize_speed.py [rows]

Prints both timings and their ratio, measured in one run on the same Parquet file (a ratio is
comparable across machines; absolute seconds are not).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ml_atlas_sdk.tensors import read_table, table_to_tensors, write_frame


def per_row_loop(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """What hand-written bundles do: pandas, then one np.asarray per cell."""
    df = pd.read_parquet(path)
    return {n: torch.from_numpy(np.stack([np.asarray(cell) for cell in df[n]])) for n in names}


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(rows: int) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "tokens": list(rng.integers(0, 1000, size=(rows, 32), dtype=np.int64)),
        "dense": list(rng.normal(size=(rows, 64)).astype(np.float32)),
        "image": list(rng.normal(size=(rows, 4, 8, 8)).astype(np.float32)),
    })
    names = list(df.columns)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_frame(df, Path(tmp) / "val.parquet")
        arrow = best_of(lambda: table_to_tensors(read_table(path, "bench"), names, "bench"))
        loop = best_of(lambda: per_row_loop(path, names))
        ours = table_to_tensors(read_table(path, "bench"), names, "bench")
        theirs = per_row_loop(path, names)
        # pandas hands tensor cells back flattened; same values either way
        assert all(torch.equal(ours[n], theirs[n].to(ours[n].dtype).reshape(ours[n].shape)) for n in names)
        size_mb = path.stat().st_size / 1e6
    print(f"rows={rows} file={size_mb:.1f} MB")
    print(f"arrow path     {arrow * 1e3:8.1f} ms")
    print(f"per-row loop   {loop * 1e3:8.1f} ms")
    print(f"speed-up       {loop / arrow:8.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
