"""Every declared dynamic axis exercised at other sizes (the dynamic_axes check), the ladder judged by
it, the scale-aware round-trip rule and per-output tolerances, through the SDK door (the pipeline
door: tests/test_dynamic_axes_pipeline.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fixture_models import trace_hazards as th
from ml_atlas_sdk import AtlasArtifactBundle, AtlasBundleError, ModelMetadata
from ml_atlas_sdk import ort_engine as rt
from ml_atlas_sdk.axis_probe import probe_inputs
from ml_atlas_sdk.bundle import MANIFEST, build_manifest, write_json
from ml_atlas_sdk.checks.forward_scan import scan_model
from ml_atlas_sdk.consumer import check_bundle_dir
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.sdk import build_in_process

DATA = th.token_data()


def _bundle(model, meta: dict | None = None, **arguments) -> AtlasArtifactBundle:
    frame = pd.DataFrame({name: list(values) for name, values in DATA.items()})
    return AtlasArtifactBundle(model=model, metadata=ModelMetadata(**(meta or th.token_metadata("hazard"))),
                               val_inputs_df=frame, export_batch_size=32, architecture_doc=None, **arguments)


def _build(tmp_path: Path, model, meta: dict | None = None, **arguments):
    return build_in_process(_bundle(model, meta, **arguments), tmp_path / "work")


def _verdicts(built) -> dict[str, str]:
    return {r.label: r.verdict.value for r in built.results}


def _agrees_at(onnx_path: Path, model, meta: ModelMetadata, sizes: list[int]) -> None:
    """model.onnx gives PyTorch's outputs at each size of seq_len (inputs built from the data's rows)."""
    session = rt.cpu_session(onnx_path)
    for size in sizes:
        feed = probe_inputs(meta, DATA, "seq_len", size)
        with torch.no_grad():
            expected = model(*[torch.from_numpy(feed[n]) for n in meta.input_names])
        np.testing.assert_allclose(session.run(None, feed)[0], expected.numpy(), atol=1e-5, err_msg=f"seq_len={size}")


@pytest.mark.parametrize("cls", [th.TrimToLongest, th.MeanOverLength])
def test_a_trace_that_froze_seq_len_is_pushed_through_the_dynamo_step(cls, tmp_path):
    built = _build(tmp_path, cls())
    assert built.export_used["dynamo"] is True and built.export_used["escalation_step"] == 5
    assert _verdicts(built)["dynamic_axes"] == "passed"
    meta = ModelMetadata(**th.token_metadata("hazard"))
    recorded = json.loads((built.dir / "metadata.json").read_text())["validated_under"]["axis_sizes"]
    assert recorded == {"seq_len": [8, 24]}  # one shorter, one longer than the data's 16
    _agrees_at(built.dir / "model.onnx", cls().eval(), meta, recorded["seq_len"])
    report = json.loads((built.dir / "validation_report.json").read_text())
    assert json.dumps(report).count('"sizes": {"seq_len": [8, 24]}') == 1


def test_a_loop_no_exporter_gets_right_is_refused_naming_axis_size_and_cause(tmp_path):
    with pytest.raises(AtlasBundleError) as refused:
        _build(tmp_path, th.LoopOverSeq())
    line = str(refused.value)
    assert "\n" not in line and "dynamic_axes: dynamic axis 'seq_len'" in line
    assert "onnxruntime fails at seq_len=8" in line  # the unrolled loop indexes past the shorter input
    assert "likely cause (forward_scan)" in line and "in range(x.shape[1])" in line and "trace_hazards.py:" in line


def test_hazard_inside_tolerance_prefers_the_dynamo_export(tmp_path, capsys):
    """Only a shorter size declared: the frozen trim length does not show, TorchScript passes; the
    `.item()` hazard makes the ladder try dynamo, which passes every check too and is chosen."""
    built = _build(tmp_path, th.TrimToLongest(), axis_sizes={"seq_len": [8]})
    assert built.export_used["dynamo"] is True
    out = capsys.readouterr().out
    assert "attempt 0 (configured settings" in out and "passed" in out.split("attempt 0")[1].splitlines()[0]
    assert "chose attempt 5: forward_scan warned of 1 trace hazard(s)" in out and "preferred" in out


def test_zeroed_small_outputs_are_refused_on_roundtrip_by_default(tmp_path):
    """Every output below 0.05: the element-wise atol alone passes all zeros; max_nrmse does not."""
    model = th.ZeroUnderExport()
    with torch.no_grad():
        assert float(model(*[torch.from_numpy(v) for v in DATA.values()]).max()) < 0.05
    with pytest.raises(AtlasBundleError) as refused:
        _build(tmp_path, model, th.token_metadata("small", 64))
    assert "roundtrip:" in str(refused.value) and "the outputs' spread across rows" in str(refused.value)


def test_a_native_crash_at_another_size_is_a_failed_verdict(tmp_path):
    with pytest.raises(AtlasBundleError) as refused:
        _build(tmp_path, th.AbortsAtOtherLengths())
    line = str(refused.value)
    assert "\n" not in line and "crashed natively (SIGABRT) running seq_len=8" in line


def test_declared_sizes_are_exercised_exactly_and_recorded(tmp_path):
    built = _build(tmp_path, th.SmallProbabilities(), th.token_metadata("small", 64), axis_sizes={"seq_len": [32, 4]})
    assert json.loads((built.dir / "metadata.json").read_text())["validated_under"]["axis_sizes"] == {"seq_len": [4, 32]}
    (axes,) = [r for r in built.results if r.name == "dynamic_axes"]
    assert [(p["size"], p["declared"]) for p in axes.details["probes"]] == [(4, True), (32, True)]


@pytest.mark.parametrize("sizes, expected", [
    ({"nope": [4]}, "checks.axis_sizes: ['nope'] not a non-batch dynamic axis"),
    ({"seq_len": [0]}, "axis_sizes.seq_len[0]: expected a number >= 1"),
])
def test_bad_axis_sizes_are_one_line_errors(sizes, expected, tmp_path):
    with pytest.raises(AtlasInputError) as bad:
        _build(tmp_path, th.SmallProbabilities(), th.token_metadata("small", 64), axis_sizes=sizes)
    assert expected in str(bad.value) and "\n" not in str(bad.value)


def test_a_declared_size_the_model_itself_cannot_run_is_a_one_line_error(tmp_path):
    with pytest.raises(AtlasInputError) as bad:
        _build(tmp_path, th.PositionsUpTo20(), axis_sizes={"seq_len": [8, 32]})
    line = str(bad.value)
    assert line.startswith("checks.axis_sizes: seq_len=32: the model's own PyTorch forward fails") and "\n" not in line


@pytest.mark.parametrize("tolerances, passes", [
    ({"roundtrip_tolerances": {"shifted": {"atol": 0.2, "max_nrmse": 1.0}}}, True),  # its own, over the global
    ({"roundtrip_atol": 0.2, "roundtrip_max_nrmse": 1.0, "roundtrip_tolerances": {"shifted": {"atol": 0.01}}}, False),
])
def test_per_output_tolerances_decide_for_their_output(tolerances, passes, tmp_path):
    meta = th.two_output_metadata("offset")
    if passes:
        built = _build(tmp_path, th.OffsetUnderExport(), meta, **tolerances)
        under = json.loads((built.dir / "metadata.json").read_text())["validated_under"]["roundtrip_tolerances"]
        assert under["shifted"] == {"rtol": 0.01, "atol": 0.2, "max_nrmse": 1.0}
        assert under["logits"] == {"rtol": 0.01, "atol": 0.05, "max_nrmse": 0.01}
    else:
        with pytest.raises(AtlasBundleError) as refused:
            _build(tmp_path, th.OffsetUnderExport(), meta, **tolerances)
        assert "roundtrip: shifted:" in str(refused.value) and "logits:" not in str(refused.value).split("roundtrip:")[1]


def test_an_unknown_output_in_per_output_tolerances_is_one_line(tmp_path):
    with pytest.raises(AtlasInputError) as bad:
        _build(tmp_path, th.OffsetUnderExport(), th.two_output_metadata("offset"),
               roundtrip_tolerances={"logitz": {"atol": 1.0}})
    assert "roundtrip.tolerances: ['logitz'] not in metadata.output_names" in str(bad.value)


def test_verify_runs_the_bundle_at_the_recorded_sizes(tmp_path):
    """A bundle whose model.onnx is swapped for the TorchScript trace of the loop (right at the data's
    16 tokens only, manifest rewritten to match): verify's ORT run at seq_len=8 fails in one line."""
    built = _build(tmp_path, th.MeanOverLength())
    assert check_bundle_dir(built.dir) == []
    copy = tmp_path / "copy"
    shutil.copytree(built.dir, copy)
    meta = ModelMetadata(**th.token_metadata("hazard"))
    sample = tuple(torch.from_numpy(DATA[n][:32]) for n in meta.input_names)
    torch.onnx.export(th.LoopOverSeq().eval(), sample, str(copy / "model.onnx"), input_names=meta.input_names,
                      output_names=meta.output_names, dynamic_axes=meta.dynamic_axes, opset_version=18, dynamo=False)
    metadata = json.loads((copy / "metadata.json").read_text())
    metadata["export"]["model_opset"] = 18
    (copy / "metadata.json").write_text(json.dumps(metadata))
    (copy / "val_outputs.pt").unlink()
    with torch.no_grad():
        torch.save({"logits": th.LoopOverSeq().eval()(*[torch.from_numpy(DATA[n]) for n in meta.input_names])},
                   copy / "val_outputs.pt")
    write_json(copy / MANIFEST, build_manifest(copy).to_dict())
    problems = check_bundle_dir(copy)
    assert any(p.startswith("model.onnx: onnxruntime fails at seq_len=8:") for p in problems), problems


def test_forward_scan_flags_size_loops_in_every_spelling_and_skips_dead_branches():
    class Spellings(torch.nn.Module):
        def forward(self, x):
            batch, steps = x.shape[:2]
            for t in range(x.size(1)):
                x = x + t
            for _ in range(len(x)):
                pass
            out = [x[:, t] for t in range(steps)]
            for i, column in enumerate(x.unbind(1)):
                pass
            if self.training:
                x = x * x.max().item()  # never taken: the export runs in eval mode
            if torch.onnx.is_in_onnx_export():
                x = x + 1
            for k in range(3):  # a plain count: nothing to flag
                pass
            return x + sum(out)

    found = [w.code for w in scan_model(Spellings())]
    assert found == ["in range(x.size(1))", "in range(len(x))", "in range(steps)", "in enumerate(x.unbind(1))",
                     "torch.onnx.is_in_onnx_export()"]
