"""A failed round-trip says where: the first module whose ONNX value disagrees with PyTorch's, by
module path and source line, for both exporters; a passing one never pays for it.

Library level: the export and roundtrip steps as both doors run them (the pipeline's copy of this
is in tests/test_dvc_experiments.py and tests/test_dvc_outputs.py)."""
from __future__ import annotations

import csv

import pytest
import torch

from fixture_models import breaks_under_export as fixture
from fixture_models.breaks_under_export import BreaksUnderExport, marked_line
from ml_atlas_sdk.checks import SkipPolicy
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.pipeline.plots import write_localization
from ml_atlas_sdk.pipeline.summary import summary_table
from ml_atlas_sdk.settings import RoundtripSettings
from ml_atlas_sdk.steps.canonical import canonical_outputs
from ml_atlas_sdk.steps.export import export_model
from ml_atlas_sdk.steps.roundtrip import roundtrip_model
from sdk_helpers import step_settings
from zoo.cases import BY_NAME

ROWS = 32
SETTINGS = RoundtripSettings()
FIXTURE_FILE = "fixture_models/breaks_under_export.py"


def export_and_roundtrip(model, inputs, meta, tmp_path, dynamo=False, get_model=None):
    """The configured export alone (no ladder), then the roundtrip stage's step; the attempt and its report."""
    skip = SkipPolicy([])
    canonical, _ = canonical_outputs(model, inputs, meta, skip, SETTINGS.batch_size)
    onnx_path = tmp_path / "model.onnx"
    settings = step_settings(meta, export={"batch_size": 8, "dynamo": dynamo}, escalation={"enabled": False})
    outcome, _ = export_model(model, inputs, canonical, settings, onnx_path)
    report, _ = roundtrip_model(onnx_path, inputs, canonical, settings, len(outcome.sample_rows), get_model or (lambda: model))
    return outcome.attempts[0], report


def test_the_sdk_door_takes_the_exports_localization_with_its_run(tmp_path):
    """push_to_mlflow hands the chosen attempt's ORT run to the round-trip step: a failure it
    localized is not localized again (the model is not even asked for)."""
    inputs = {"x": torch.randn(ROWS, fixture.FEATURES, generator=torch.Generator().manual_seed(5))}
    model, meta = fixture.build_model("half"), ModelMetadata(**fixture.metadata())
    canonical, _ = canonical_outputs(model, inputs, meta, SkipPolicy([]), SETTINGS.batch_size)
    settings = step_settings(meta, export={"batch_size": 8}, escalation={"enabled": False})
    outcome, _ = export_model(model, inputs, canonical, settings, tmp_path / "model.onnx")

    def no_model():
        raise AssertionError("localized again")

    report, _ = roundtrip_model(tmp_path / "model.onnx", inputs, canonical, settings, len(outcome.sample_rows), no_model,
                                reused=outcome.chosen.ort_run)
    found = report.extra["localization"]
    assert found["status"] == "found" and found["first_divergence"]["module"] == "blocks.1"
    assert {k: v for k, v in found.items() if k != "trail"} == outcome.chosen.localization and found["trail"]


def residual(fault, tmp_path, **kw):
    inputs = {"x": torch.randn(ROWS, fixture.FEATURES, generator=torch.Generator().manual_seed(5))}
    model = fixture.build_model(fault)
    return export_and_roundtrip(model, inputs, ModelMetadata(**fixture.metadata()), tmp_path, **kw)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_names_the_block_that_rounds_through_float16(dynamo, tmp_path):
    attempt, report = residual("half", tmp_path, dynamo=dynamo)
    result, found = report.checks[0], report.extra["localization"]
    assert result.verdict.value == "failed" and found["status"] == "found", found["message"]
    where = found["first_divergence"]
    assert (where["module"], where["module_type"]) == ("blocks.1", "HalfBlock")
    assert where["source"].endswith(f"{FIXTURE_FILE}:{marked_line('HalfBlock.forward')}")
    assert where["non_finite_mismatch"] > 0 and "Inf in ONNX but finite in PyTorch" in where["problem"]
    # Just before it, the block's own layers still agree; the float16 casts ran in between.
    assert found["before"]["module"].startswith("blocks.1.") and found["before"]["out_of_tol"] == 0
    casts = [op for op in found["suspect_ops"] if op["op_type"] == "Cast"]
    assert casts and all(op["module"] == "blocks.1" for op in casts)
    if dynamo:  # the dynamo exporter keeps each node's Python stack: the cast's own line is named
        assert all(op["op_source"].endswith(f"{FIXTURE_FILE}:{marked_line('half cast')}") for op in casts)

    # The same place in the ladder attempt's log, the check (validation_report.json) and the end-of-run table.
    assert attempt.status == "roundtrip_failed"
    assert attempt.localization["first_divergence"]["module"] == "blocks.1"
    assert result.details["localization"]["first_divergence"] == where and "trail" not in result.details["localization"]
    assert "first divergence in module 'blocks.1' (HalfBlock, " in result.message
    assert "localized: first divergence in module 'blocks.1' (HalfBlock," in summary_table([result])
    assert 0 < found["seconds"] == report.metrics["localization_seconds"]

    # The depth plot: nothing out of tolerance before the block, something from it on.
    trail = found["trail"]
    assert [row["module"] for row in trail].index("blocks.1") == where["depth"]
    assert all(row["frac_out_of_tol"] == 0 for row in trail[: where["depth"]]) and trail[where["depth"]]["frac_out_of_tol"] > 0
    with open(write_localization(tmp_path / "plot", found)) as handle:
        plotted = list(csv.DictReader(handle))
    assert [row["module"] for row in plotted] == [row["module"] for row in trail]


def test_names_the_module_where_nan_first_appears(tmp_path):
    _, report = residual("nan", tmp_path)
    where = report.extra["localization"]["first_divergence"]
    assert (where["module"], where["module_type"]) == ("blocks.1", "NanBlock")
    assert where["source"].endswith(f"{FIXTURE_FILE}:{marked_line('NanBlock.forward')}")
    assert "NaN in ONNX but finite in PyTorch" in where["problem"]


def test_a_break_outside_every_compared_module_is_bracketed(tmp_path):
    """Every submodule agrees; the break is in the forward of a model with two outputs."""
    meta = ModelMetadata(**{**fixture.metadata(), "output_names": ["first", "second"],
                            "output_shape": {"first": [-1, fixture.CLASSES], "second": [-1, fixture.CLASSES]},
                            "dynamic_axes": {"x": {0: "batch"}, "first": {0: "batch"}, "second": {0: "batch"}}})
    inputs = {"x": torch.randn(ROWS, fixture.FEATURES, generator=torch.Generator().manual_seed(5))}
    torch.manual_seed(0)
    _, report = export_and_roundtrip(fixture.TwoHeads().eval(), inputs, meta, tmp_path, dynamo=True)
    found = report.extra["localization"]
    assert found["status"] == "not_found" and found["compared"] == 3, found["message"]
    add = [op for op in found["suspect_ops"] if op["op_type"] == "Add"]
    assert add and add[0]["module"] == "" and add[0]["op_source"].endswith(f":{marked_line('outside every submodule')}")
    assert "outside every compared module" in report.checks[0].message


def test_a_passing_model_never_runs_localization(tmp_path):
    built = []
    model = fixture.build_model(None)
    attempt, report = residual(None, tmp_path, get_model=lambda: built.append(model) or model)
    assert report.checks[0].verdict.value == "passed"
    assert report.extra["localization"] == {"status": "not_run", "message": "the round-trip passed"}
    assert built == [] and attempt.localization is None and report.metrics["localization_seconds"] == 0
    assert "localization" not in report.checks[0].details  # a passing bundle's validation_report.json is unchanged
    with open(write_localization(tmp_path / "plot", report.extra["localization"])) as handle:
        assert len(handle.read().splitlines()) == 1  # header only


@pytest.mark.parametrize("case_name, block", [
    ("convnet", "features.4"),  # the second conv; the TorchScript exporter folds each BatchNorm into its conv
    ("gpt2_mask", "gpt2.transformer.h.1.mlp.c_proj"),  # its outputs are ~0.02: 1.5x is within atol=0.05 there
])
def test_a_broken_block_of_a_zoo_model_is_localized_in_a_few_seconds(case_name, block, tmp_path):
    case = BY_NAME[case_name]
    model = case.model()
    parent, name = block.rsplit(".", 1)
    setattr(model.get_submodule(parent), name, BreaksUnderExport(model.get_submodule(block)))
    declared = case.metadata.get("input_dtypes") or {}
    inputs = {n: torch.from_numpy(a.astype(declared.get(n) or ("float32" if a.dtype.kind == "f" else "int64")))
              for n, a in case.inputs().items()}
    _, report = export_and_roundtrip(model, inputs, ModelMetadata(**case.metadata), tmp_path)
    found = report.extra["localization"]
    assert found["status"] == "found", found["message"]
    assert found["first_divergence"]["module"] == block
    assert found["first_divergence"]["source"].endswith(f"{FIXTURE_FILE}:{marked_line('BreaksUnderExport.forward')}")
    assert found["before"]["module"] == f"{block}.inner" and found["before"]["out_of_tol"] == 0
    assert len(found["rows"]) == SETTINGS.localize_rows
    assert 0 < report.metrics["localization_seconds"] < 5
