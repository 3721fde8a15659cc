"""Default settings for the SDK door; conf/ holds the same values for the pipeline (a test
asserts they agree, so both doors build the same bundle from the same inputs)."""
from __future__ import annotations

EXPORT_BATCH_SIZE = 64
DO_CONSTANT_FOLDING = True
DYNAMO = False
ESCALATION_ENABLED = True
ESCALATION_LADDER = (
    {"opset": 18},
    {"opset": 20},
    {"do_constant_folding": False},
    {"opset": 20, "do_constant_folding": False},
    {"dynamo": True},
)
ROUNDTRIP_RTOL = 0.01
ROUNDTRIP_ATOL = 0.05
ROWS_PER_RUN = 256
DRIFT_TOLERANCE_MSE = 0.001
DRIFT_TOLERANCE_MAX_ABS = 0.05
CALIB_MIN_ROWS = 1000
ARCHDOC_LLM_MODEL = "claude-sonnet-4-5"
MLFLOW_EXPERIMENT = "atlas-bundles"
BUNDLE_SCHEMA_VERSION = "1"
