"""DVC stage `canonical_outputs`; also runs alone with Hydra overrides: `python stages/canonical_outputs.py key=value`."""
import hydra
from omegaconf import DictConfig

from ml_atlas_sdk.pipeline import run_stage, stage_entry
from ml_atlas_sdk.pipeline.stages.canonical_outputs import run_canonical_outputs


@hydra.main(config_path="..", config_name="params", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_stage(run_canonical_outputs, cfg)


if __name__ == "__main__":
    stage_entry(main)
