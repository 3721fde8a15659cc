"""DVC stage `precision`; also runs alone with Hydra overrides: `python stages/precision.py key=value`."""
import hydra
from omegaconf import DictConfig

from ml_atlas_sdk.pipeline import run_stage, stage_entry
from ml_atlas_sdk.pipeline.stages.precision import run_precision


@hydra.main(config_path="..", config_name="params", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_stage(run_precision, cfg)


if __name__ == "__main__":
    stage_entry(main)
