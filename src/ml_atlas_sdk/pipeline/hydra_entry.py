"""What every stage script shares: quiet Hydra, resolved config, one-line user errors."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ml_atlas_sdk.errors import AtlasBundleError, AtlasInputError

# Hydra would otherwise create outputs/<date>/, a .hydra/ copy of the config and a .log file for
# every run; DVC stages must write nothing but their declared outputs.
QUIET_HYDRA = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none")


def stage_entry(hydra_main: Callable[[], None]) -> None:
    """Call a @hydra.main function with the quiet overrides appended to the command line."""
    given = {arg.split("=", 1)[0] for arg in sys.argv[1:]}
    sys.argv.extend(o for o in QUIET_HYDRA if o.split("=", 1)[0] not in given)
    hydra_main()


def run_stage(stage: Callable[[dict[str, Any]], None], cfg: DictConfig) -> None:
    """Run one stage on the resolved config.

    Input that cannot be processed exits 2 and a refused or failed upload exits 1, each with
    one line on stderr instead of a traceback.
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        stage(config)
    except AtlasInputError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except AtlasBundleError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
