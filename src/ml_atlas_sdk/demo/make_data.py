"""Regenerate the demo's weights and Parquet data under data/demo/ (committed; run only to change them).

    python -m ml_atlas_sdk.demo.make_data data/demo
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ml_atlas_sdk.demo.ranking import DENSE_FEATURES, VOCAB_SIZE, build_model, demo_weights
from ml_atlas_sdk.models import run_canonical
from ml_atlas_sdk.tensors import write_frame

SEQ_LEN = 12


def make_inputs(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB_SIZE, size=(rows, SEQ_LEN), dtype=np.int64)
    dense = rng.normal(size=(rows, DENSE_FEATURES)).astype(np.float32)
    return pd.DataFrame({"tokens": list(tokens), "dense": list(dense)})


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = demo_weights()
    torch.save(weights, out / "ranking_weights.pt")
    val = make_inputs(512, seed=1)
    write_frame(val, out / "val_inputs.parquet")
    write_frame(make_inputs(1024, seed=2), out / "calibration_inputs.parquet")
    model = build_model()
    model.load_state_dict(weights)
    inputs = {c: torch.from_numpy(np.stack(val[c].to_numpy())) for c in val.columns}
    outputs = run_canonical(model, inputs, ["tokens", "dense"], ["ctr", "logits"], batch_size=256, progress=False)
    write_frame(pd.DataFrame({k: list(v.numpy()) for k, v in outputs.items()}), out / "val_outputs.parquet")
    print(f"wrote demo weights and data to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/demo")
