"""Stage drift: the user's own reference outputs (if given) against the canonical outputs."""
from __future__ import annotations

from ml_atlas_sdk import tensors as tio
from ml_atlas_sdk.build import VAL_OUTPUTS_USER, tensor_file
from ml_atlas_sdk.pipeline.outputs import begin, finish
from ml_atlas_sdk.pipeline.paths import CANONICAL_OUTPUTS, PLOTS, TENSORS_DIR
from ml_atlas_sdk.pipeline.plots import write_error_quantiles
from ml_atlas_sdk.settings import Settings
from ml_atlas_sdk.steps.drift import drift_step


def run_drift(cfg: Settings) -> None:
    begin("drift", PLOTS / "drift")
    user_path = TENSORS_DIR / tensor_file(VAL_OUTPUTS_USER)
    user = tio.load_tensors(user_path) if user_path.is_file() else None
    canonical = tio.load_tensors(CANONICAL_OUTPUTS)
    report = drift_step(user, canonical, cfg.drift.tolerance_mse, cfg.drift.tolerance_max_abs, cfg.checks.policy)
    compared = None if user is None else {n: user[n] for n in canonical if n in user}
    write_error_quantiles(PLOTS / "drift", compared, canonical)  # headed, empty CSVs when skipped
    finish(report)
