"""The DVC front door: Hydra config in, files under build/ and reports/ out."""
from ml_atlas_sdk.pipeline.hydra_entry import run_stage, stage_entry

__all__ = ["run_stage", "stage_entry"]
