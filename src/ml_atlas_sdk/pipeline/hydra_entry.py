"""What every stage script shares: quiet Hydra, validated settings, one-line user errors."""
from __future__ import annotations

import sys
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ml_atlas_sdk.errors import AtlasBundleError, AtlasInputError
from ml_atlas_sdk.secrets import first_line, scrub
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.user_errors import stage_failure

# Hydra would otherwise create outputs/<date>/, a .hydra/ copy of the config and a .log file for
# every run; DVC stages must write nothing but their declared outputs.
QUIET_HYDRA = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none")


def stage_entry(hydra_main: Callable[[], None]) -> None:
    """Call a @hydra.main function with the quiet overrides appended to the command line."""
    given = {arg.split("=", 1)[0] for arg in sys.argv[1:]}
    sys.argv.extend(o for o in QUIET_HYDRA if o.split("=", 1)[0] not in given)
    hydra_main()


def load_settings(cfg: DictConfig) -> Settings:
    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:  # e.g. ${oc.env:X} with X unset
        raise AtlasInputError(f"params: {first_line(exc)}") from None
    return Settings.from_config(raw)


def run_stage(stage: Callable[[Settings], None], cfg: DictConfig) -> None:
    """Validate every setting, then run one stage on them.

    Validation comes first, so a wrong type or a typo stops the stage before it reads a file or
    unpickles a model. Input that cannot be processed exits 2 and a refused or failed upload
    exits 1, each with one line on stderr instead of a traceback.
    """
    try:
        settings = load_settings(cfg)
        stage(settings)
    except AtlasInputError as exc:  # errors in the user's model code also leave reports/<stage>.json
        print(f"error: {scrub(stage_failure(exc, stage.__name__.removeprefix('run_')))}", file=sys.stderr, flush=True)
        sys.exit(2)
    except AtlasBundleError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr, flush=True)
        sys.exit(1)
