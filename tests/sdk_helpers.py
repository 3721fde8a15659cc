"""Demo inputs for the SDK door, built the way a notebook user would."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import yaml

from conftest import REPO_ROOT
from ml_atlas_sdk import ModelMetadata
from ml_atlas_sdk.demo.ranking import build_model
from ml_atlas_sdk.settings import Settings


def demo_model() -> torch.nn.Module:
    model = build_model()
    model.load_state_dict(torch.load(REPO_ROOT / "data/demo/ranking_weights.pt", weights_only=True))
    return model


def demo_metadata() -> ModelMetadata:
    return ModelMetadata(**yaml.safe_load((REPO_ROOT / "conf/metadata/demo.yaml").read_text()))


def demo_frame(name: str, root: Path = REPO_ROOT) -> pd.DataFrame:
    return pd.read_parquet(root / f"data/demo/{name}.parquet")


def step_settings(metadata: ModelMetadata, **sections) -> Settings:
    """Settings for calling the build's steps directly: the schema's defaults, `sections` over them
    (mlflow.experiment has no default; the steps never read it)."""
    return Settings.model_validate({"metadata": metadata, "mlflow": {"experiment": "steps"}, **sections})
