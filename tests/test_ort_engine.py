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


def test_an_output_that_does_not_follow_the_rows_keeps_its_real_shape(tmp_path):
    """A graph whose output does not have one entry per fed row (here a sum over the batch) must
    reach the comparison with the shape ONNX Runtime gave, never as a preallocated array with rows
    nobody wrote."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from ml_atlas_sdk import ort_engine as rt

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], "pooled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], initializer=[axes])
    path = tmp_path / "pooled.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.arange(18, dtype=np.float32).reshape(6, 3)
    out = rt.run_onnx(rt.cpu_session(path), {"x": x}, ["x"], ["y"], 4)["y"]
    assert out.tolist() == [x[:4].sum(0).tolist(), x[4:].sum(0).tolist()]
    assert rt.compare({"y": out}, {"y": x}, rt.Tolerance(0.01, 0.05))["y"]["shape_mismatch"] == 1
