"""The ONNX Runtime engine stands apart from the checks: no import runs back up into checks/."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("first", ["ml_atlas_sdk.ort_engine", "ml_atlas_sdk.checks.roundtrip", "ml_atlas_sdk.checks"])
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    code = (f"import sys, {first}; from ml_atlas_sdk.checks.registry import _FUNCTIONS; "
            "import ml_atlas_sdk.checks; "
            "from ml_atlas_sdk.checks.roundtrip import roundtrip; assert _FUNCTIONS['roundtrip'] is roundtrip")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_engine_imports_nothing_under_checks():
    code = ("import sys, ml_atlas_sdk.ort_engine; "
            "print(sorted(m for m in sys.modules if m.startswith('ml_atlas_sdk.checks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
