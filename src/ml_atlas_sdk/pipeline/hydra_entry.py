"""What every stage script shares: quiet Hydra, validated settings, one-line user errors."""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ml_atlas_sdk.errors import AtlasBundleError, AtlasInputError
from ml_atlas_sdk.pipeline import judged
from ml_atlas_sdk.pipeline.outputs import stale_report
from ml_atlas_sdk.reports import write_json
from ml_atlas_sdk.secrets import first_line, scrub
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.user_errors import stage_failure

# Hydra would otherwise create outputs/<date>/, a .hydra/ copy of the config and a .log file for
# every run; DVC stages must write nothing but their declared outputs.
QUIET_HYDRA = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none")


def stage_entry(hydra_main: Callable[[], None]) -> None:
    """Call a @hydra.main function with the quiet overrides appended to the command line, then end
    the process without the interpreter's teardown."""
    given = {arg.split("=", 1)[0] for arg in sys.argv[1:]}
    sys.argv.extend(o for o in QUIET_HYDRA if o.split("=", 1)[0] not in given)
    hydra_main()
    exit_without_teardown()


def exit_without_teardown() -> None:
    """Exit 0 once a stage has written its outputs, skipping the interpreter's teardown: freeing
    torch's modules one by one takes ~0.4 s of every model stage (a third of `import torch`), for
    memory the OS takes back at once. atexit handlers still run (logging, tqdm); a live non-daemon
    thread (work it may still finish) gets the normal exit instead."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
    name = stage.__name__.removeprefix("run_")
    start_up, started = process_age(), time.perf_counter()
    try:
        settings = load_settings(cfg)
        stage(settings)
        record_timing(name, start_up, time.perf_counter() - started)
        judged.bind(name, stale_report(name), settings)  # last: its digest covers the report as it stays
    except AtlasInputError as exc:  # errors in the user's model code also leave reports/<stage>.json
        print(f"error: {scrub(stage_failure(exc, name))}", file=sys.stderr, flush=True)
        sys.exit(2)
    except AtlasBundleError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr, flush=True)
        sys.exit(1)


def process_age() -> float | None:
    """Seconds since this process started (the interpreter, imports and Hydra before any stage
    work); None where /proc does not say."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
            return round(float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def record_timing(stage: str, start_up: float | None, work: float) -> None:
    """Add where the stage's time went to its report: in a DVC pipeline every stage is a process of
    its own, and start-up (imports, Hydra, settings) can outweigh the work."""
    path = stale_report(stage)
    if path.is_file():
        report = json.loads(path.read_text())
        report["timing"] = {"start_up_s": start_up, "work_s": round(work, 3)}
        write_json(path, report)
