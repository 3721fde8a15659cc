"""Figures 1 and 4: tensorize against the Parquet floor, and peak memory as validation rows grow."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from measure import Figure, at_most, make_project_copy, measure, python, reported, set_params

# Child process: the tensor columns users write (ids, dense features, an image), `rows` rows.
_WRITE = """
import sys
import numpy as np, pandas as pd
from ml_atlas_sdk.tensors import write_frame
rows, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
write_frame(pd.DataFrame({
    "tokens": list(rng.integers(0, 1000, size=(rows, 32), dtype=np.int64)),
    "dense": list(rng.normal(size=(rows, 64)).astype(np.float32)),
    "image": list(rng.normal(size=(rows, 4, 16, 16)).astype(np.float32)),
}), path)
"""
# Child process: one way of reading the file; prints the seconds of the read alone and the tensors' bytes.
_READ = """
import json, resource, sys, time
import numpy as np, pandas as pd, pyarrow.parquet as pq
from ml_atlas_sdk.tensors import open_table, table_to_tensors
how, path = sys.argv[1], sys.argv[2]
names = ["tokens", "dense", "image"]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if how == "floor":
    out = pq.read_table(path)
    nbytes = out.nbytes
elif how == "ours":
    out = table_to_tensors(open_table(path, "bench"), names, "bench")  # streams record batches
    nbytes = sum(t.nbytes for t in out.values())
else:  # what hand-written bundles do
    df = pd.read_parquet(path)
    out = {n: np.stack([np.asarray(c) for c in df[n]]) for n in names}
    nbytes = sum(t.nbytes for t in out.values())
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "mb": nbytes / 2**20, "rss_growth_mb": peak - before}))
"""


def tensorize_figures(quick: bool) -> list[Figure]:
    rows = 5_000 if quick else 230_000  # ~1 GB of cells in the full run
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        path = Path(tmp) / "val.parquet"
        measure(python(_WRITE, str(rows), str(path)), Path(tmp))
        runs = {how: _best_read(how, path, 1 if quick or how == "pandas" else 3) for how in ("floor", "ours", "pandas")}
        size_mb = path.stat().st_size / 2**20
    ours, floor, pandas = runs["ours"], runs["floor"], runs["pandas"]
    note = f"{rows} rows, {size_mb:.0f} MB file"
    return [
        at_most("tensorize / pyarrow read_table", ours["seconds"] / floor["seconds"], 1.5, note=note),
        reported("tensorize speed-up over pandas+np.stack", pandas["seconds"] / ours["seconds"], "x"),
        at_most("tensorize peak RSS growth / tensor bytes", ours["rss_growth_mb"] / ours["mb"], 1.5,
                note=f"tensors {ours['mb']:.0f} MB"),
    ]


def _best_read(how: str, path: Path, repeats: int) -> dict:
    runs = [json.loads(measure(python(_READ, how, str(path)), path.parent).stdout) for _ in range(repeats)]
    return min(runs, key=lambda r: r["seconds"])


# Child process: the demo's validation inputs grown to `rows` rows (same distribution).
_GROW = """
import sys
from ml_atlas_sdk.demo.make_data import make_inputs
from ml_atlas_sdk.tensors import write_frame
write_frame(make_inputs(int(sys.argv[1]), seed=1), sys.argv[2])
"""


def memory_figures(quick: bool) -> list[Figure]:
    """Peak RSS of canonical_outputs, export, roundtrip and precision (one process each) as rows grow 10x and 100x
    (--quick: 10x only)."""
    sizes = (500, 5_000) if quick else (10_000, 100_000, 1_000_000)
    peaks: dict[str, list[float]] = {"canonical_outputs": [], "export": [], "roundtrip": [], "precision": []}
    with tempfile.TemporaryDirectory(prefix="atlas-bench-mem-") as tmp:
        project = make_project_copy(Path(tmp) / "project")
        set_params(project, data={"val_outputs": None, "calibration_inputs": None}, escalation={"enabled": False})
        for rows in sizes:
            measure(python(_GROW, str(rows), "data/demo/val_inputs.parquet"), project)
            measure(["dvc", "repro", "tensorize", "model_code_models"], project)
            for stage in peaks:
                peaks[stage].append(measure(["dvc", "repro", "-s", stage], project).peak_mb)
    figures = []
    for stage, measured in peaks.items():
        small, large = measured[0], measured[-1]
        figures.append(at_most(f"{stage} peak RSS {sizes[-1]:,} / {sizes[0]:,} rows", large / small, 1.5,
                               note=" -> ".join(f"{m:.0f}" for m in measured) + " MB"))
    return figures
