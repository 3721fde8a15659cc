"""Checks: typed results, one registry, the check functions grouped by what they look at."""
from ml_atlas_sdk.checks.registry import CHECK_SPECS, SkipPolicy, check, run_check
from ml_atlas_sdk.checks.result import CheckResult, Finding, Verdict, worst

__all__ = ["CHECK_SPECS", "CheckResult", "Finding", "SkipPolicy", "Verdict", "check", "run_check", "worst"]

# Importing the check modules registers their functions.
from ml_atlas_sdk.checks import data_checks, drift, dynamic_axes, forward_scan, invariance, onnx_checks, roundtrip  # noqa: E402,F401
from ml_atlas_sdk.checks import precision  # noqa: E402,F401
