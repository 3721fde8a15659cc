"""What the precision checks cost: their share of an SDK build of the demo bundle.

    .venv/bin/python bench/precision_share.py [builds]

Builds the demo bundle in-process a few times (every step, no push, no archdoc) and prints the precision
step's seconds as the step itself records them (FP32 pass with hooks, FP16 pass, calibration
coverage) beside the whole build's, and their ratio: a ratio from one run is comparable across
machines, absolute seconds are not.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from ml_atlas_sdk import AtlasArtifactBundle, ModelMetadata
from ml_atlas_sdk import sdk
from ml_atlas_sdk.demo.ranking import build_model

ROOT = Path(__file__).resolve().parents[1]


def demo_bundle() -> AtlasArtifactBundle:
    model = build_model()
    model.load_state_dict(torch.load(ROOT / "data/demo/ranking_weights.pt", weights_only=True))
    frames = {name: pd.read_parquet(ROOT / f"data/demo/{name}.parquet")
              for name in ("val_inputs", "val_outputs", "calibration_inputs")}
    return AtlasArtifactBundle(
        model=model, metadata=ModelMetadata(**yaml.safe_load((ROOT / "conf/metadata/demo.yaml").read_text())),
        val_inputs_df=frames["val_inputs"], val_outputs_df=frames["val_outputs"],
        calibration_inputs_df=frames["calibration_inputs"], architecture_doc=None,
    )


def main(repeats: int) -> None:
    recorded: list[dict[str, float]] = []
    step = sdk.precision_step

    def keep_seconds(*args, **kwargs):  # the step's own timings, from the report it returns
        report = step(*args, **kwargs)
        recorded.append(report.metrics["seconds"])
        return report

    sdk.precision_step = keep_seconds
    bundle = demo_bundle()
    totals = []
    for _ in range(repeats):  # the first build also pays for imports and warm-up
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            sdk.build_in_process(bundle, Path(tmp))
            totals.append(time.perf_counter() - began)
    print(f"demo bundle, {len(bundle.val_inputs_df)} validation rows, {repeats} builds (median build shown)")
    middle = sorted(range(repeats), key=lambda i: totals[i])[repeats // 2]
    for part in ("fp32_hooks", "fp16", "calibration", "total"):
        print(f"  precision {part:<12} {recorded[middle][part]:8.2f} s")
    print(f"sdk build total          {totals[middle]:8.2f} s")
    shares = sorted(r["total"] / t for r, t in zip(recorded, totals))
    print(f"precision share          {shares[repeats // 2]:8.1%} (median; per build {', '.join(f'{x:.0%}' for x in shares)})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
