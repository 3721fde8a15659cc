"""One settings schema for both doors: strict types, unknown keys refused, defaults equal to conf/,
one opset rule, and every bad setting one line naming its key before the stage runs."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import yaml

from conftest import REPO_ROOT, make_project_copy, run
from ml_atlas_sdk import AtlasArtifactBundle, AtlasInputError
from ml_atlas_sdk.models import ModelSource
from ml_atlas_sdk.pipeline.params import compose_params
from ml_atlas_sdk.sdk import build_in_process, settings_of
from ml_atlas_sdk.settings import DEFAULT_EXPERIMENT, MlflowSettings, Settings
from sdk_helpers import demo_frame, demo_metadata, demo_model

PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


class Hostile:
    """A pickle that leaves a marker file when it is loaded: proof that loading ran its code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _refused(mutate) -> str:
    raw = copy.deepcopy(PARAMS)
    mutate(raw)
    with pytest.raises(AtlasInputError) as info:
        Settings.from_config(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def _set(section, key, value):
    return lambda raw: raw[section].__setitem__(key, value)


def test_conf_defaults_equal_the_schema_defaults(tmp_path):
    composed = yaml.safe_load(compose_params(REPO_ROOT, tmp_path / "params.yaml").read_text())
    defaults = Settings(metadata=demo_metadata(), mlflow=MlflowSettings(experiment=DEFAULT_EXPERIMENT)).to_params()
    for section in ("model", "data"):  # the demo model's own; the schema's defaults name no model
        defaults.pop(section), composed.pop(section)
    assert {k: v for k, v in composed.items() if k != "metadata"} == defaults
    # and conf/ validates as it is, unchanged by validation
    validated = Settings.from_config(PARAMS)
    assert validated.to_params() == {k: v for k, v in PARAMS.items() if k != "metadata"}


@pytest.mark.parametrize("mutate, expected", [
    (_set("model", "trust_pickle", "false"), "model.trust_pickle: expected true or false, got the string 'false'"),
    (_set("model", "trust_pickle", 1), "model.trust_pickle: expected true or false, got 1"),
    (_set("roundtrip", "atol", math.nan), "roundtrip.atol: expected a finite number, got nan"),
    (_set("roundtrip", "rtol", math.inf), "roundtrip.rtol: expected a finite number, got inf"),
    (_set("roundtrip", "batch_size", 0), "roundtrip.batch_size: expected a number >= 1, got 0"),
    (_set("drift", "tolerance_mse", math.nan), "drift.tolerance_mse: expected a finite number, got nan"),
    (_set("drift", "tolerance_max_abs", -0.1), "drift.tolerance_max_abs: expected a number >= 0.0, got -0.1"),
    (_set("drift", "tolerance_mse", "1e-3"), "drift.tolerance_mse: expected a number, got the string '1e-3'"),
    (lambda raw: raw["mlflow"].pop("experiment"), "mlflow.experiment: required, but missing"),
    (_set("mlflow", "experiment", None), "mlflow.experiment: expected a string, got null"),
    (lambda raw: raw["model"].__setitem__("weigths", raw["model"].pop("weights")),
     "model.weigths: unknown setting; known: ['checkpoint', 'code_dirs', 'factory', 'kwargs', 'name', 'trust_pickle', 'weights']"),
    (lambda raw: raw.__setitem__("dirft", {}), "dirft: unknown setting; known: ['archdoc', 'bundle_schema_version'"),
    (lambda raw: raw["escalation"]["ladder"].append({"opst": 18}), "escalation.ladder[5].opst: unknown setting"),
    (_set("escalation", "ladder", [{"opset": 16}]), "escalation.ladder[0].opset: 16 is below the minimum opset 17"),
    (_set("export", "dynamo", "true"), "export.dynamo: expected true or false, got the string 'true'"),
    (_set("checks", "skip", ["nan_inf", "typo"]), "checks.skip: unknown check name(s) ['typo']"),
    (lambda raw: raw.__setitem__("drift", 0.1), "drift: expected a mapping, got 0.1"),
    (_set("precision", "fp16_margin", 70000.0), "precision.fp16_margin: expected a number < 65504"),
    (_set("precision", "calib_max_outside_share", 1.5), "precision.calib_max_outside_share: expected a number <= 1"),
])
def test_bad_settings_are_one_line_naming_the_key(mutate, expected):
    assert expected in _refused(mutate)


def test_every_bad_key_is_named_in_the_same_line():
    def two_problems(raw):
        raw["roundtrip"]["atol"] = math.nan
        raw["upload"]["dry_run"] = "no"
    message = _refused(two_problems)
    assert "roundtrip.atol:" in message and "upload.dry_run:" in message


def test_a_missing_tolerance_takes_the_default():
    raw = copy.deepcopy(PARAMS)
    del raw["drift"]["tolerance_mse"]
    assert Settings.from_config(raw).drift.tolerance_mse == 1e-3


def test_settings_that_are_not_a_mapping_are_one_line():
    with pytest.raises(AtlasInputError, match=r"^params: expected a mapping of sections, got \[1, 2\]$"):
        Settings.from_config([1, 2])


@pytest.mark.parametrize("uri", ["http://alice:hunter2-secret@mlflow.example:5000", "https://alice:hunter2-secret@h/x?y=1"])
def test_a_password_in_the_tracking_uri_is_refused_without_echoing_it(uri):
    message = _refused(_set("mlflow", "tracking_uri", uri))
    assert message.startswith("mlflow.tracking_uri: ") and "hunter2" not in message and "y=1" not in message
    assert "MLFLOW_TRACKING_USERNAME" in message and "MLFLOW_TRACKING_TOKEN" in message
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"))
    with pytest.raises(AtlasInputError) as info:
        settings_of(bundle, tracking_uri=uri)  # what push_to_mlflow(..., tracking_uri=uri) builds first
    assert str(info.value).startswith("tracking_uri: ") and "hunter2" not in str(info.value)


def test_model_source_refuses_a_typo_instead_of_building_random_weights():
    with pytest.raises(AtlasInputError, match=r"^model\.weigths: unknown setting"):
        ModelSource.from_config({"factory": "ml_atlas_sdk.demo.ranking:build_model", "weigths": "w.pt"})


def _bundle(**metadata_changes) -> AtlasArtifactBundle:
    meta = {**demo_metadata().model_dump(exclude={"torch_version"}), **metadata_changes}
    return AtlasArtifactBundle(model=demo_model(), metadata=meta, val_inputs_df=demo_frame("val_inputs"))


@pytest.mark.parametrize("opset", [17, 18, 20])
def test_both_doors_apply_one_opset_rule(opset):
    raw = copy.deepcopy(PARAMS)
    raw["metadata"]["onnx_opset"] = opset
    pipeline_export, pipeline_ladder = Settings.from_config(raw).export_plan()
    sdk_export, sdk_ladder = settings_of(_bundle(onnx_opset=opset)).export_plan()
    assert (pipeline_export, pipeline_ladder) == (sdk_export, sdk_ladder)
    assert pipeline_export.opset == opset  # export.opset 17 is where to start, metadata.onnx_opset the floor
    assert all(step.get("opset", opset) >= opset for step in pipeline_ladder)


# Real stage scripts in one project copy: validation happens before the stage reads anything.

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project_copy(tmp_path_factory.mktemp("settings") / "project")


def _fails_with(project, stage: str, *overrides: str, env=None) -> str:
    from conftest import project_env
    result = run(["python", f"stages/{stage}.py", *overrides], project, check=False, env=project_env(env))
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("trust, env", [
    ("model.trust_pickle='false'", {}),
    ("model.trust_pickle=${oc.env:ATLAS_TRUST_PICKLE,false}", {}),  # the default resolves to the string 'False'
    ("model.trust_pickle=${oc.env:ATLAS_TRUST_PICKLE}", {"ATLAS_TRUST_PICKLE": "false"}),
], ids=["quoted", "env-default", "env-set"])
def test_the_string_false_never_unpickles(project, trust, env):
    marker = project / "pickle_ran"
    torch.save(Hostile(marker), project / "data/evil.pt")
    line = _fails_with(project, "canonical_outputs", "model.checkpoint=data/evil.pt", trust, env=env)
    assert "model.trust_pickle: expected true or false, got the string 'false'" in line.lower()
    assert not marker.exists()


def test_the_hostile_pickle_is_real(project):
    """The control for the test above: with a real `true` the same file does run its code."""
    marker = project / "pickle_ran"
    torch.save(Hostile(marker), project / "data/evil.pt")
    line = _fails_with(project, "canonical_outputs", "model.checkpoint=data/evil.pt", "model.trust_pickle=true")
    assert "not a torch.nn.Module" in line
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("stage, overrides, expected", [
    ("roundtrip", ["roundtrip.atol=nan"], "error: roundtrip.atol: expected a finite number, got nan"),
    ("upload", ["~mlflow.experiment"], "error: mlflow.experiment: required, but missing"),
    ("canonical_outputs", ["+model.weigths=data/demo/ranking_weights.pt"], "error: model.weigths: unknown setting"),
])
def test_stage_scripts_refuse_bad_settings_before_running(project, stage, overrides, expected):
    report = project / "reports" / f"{stage}.json"
    before = report.stat().st_mtime_ns if report.exists() else None
    assert _fails_with(project, stage, *overrides).startswith(expected)
    assert (report.stat().st_mtime_ns if report.exists() else None) == before  # refused before the stage began


def test_stage_script_refuses_a_password_in_the_tracking_uri(project):
    line = _fails_with(project, "upload", "mlflow.tracking_uri=http://alice:hunter2-secret@127.0.0.1:9")
    assert line.startswith("error: mlflow.tracking_uri: http://***@127.0.0.1:9 holds a password")
    assert "hunter2" not in line


def test_opset_18_metadata_is_accepted_identically_by_both_doors(project, tmp_path, monkeypatch):
    """The pipeline used to stop (export.opset 17 below metadata.onnx_opset 18) where the SDK exported at 18."""
    run(["python", "stages/tensorize.py", "metadata.onnx_opset=18"], project)
    run(["python", "stages/canonical_outputs.py", "metadata.onnx_opset=18"], project)
    run(["python", "stages/export.py", "metadata.onnx_opset=18"], project)
    export = json.loads((project / "reports/export.json").read_text())
    assert export["settings_used"]["opset"] == 18 and export["metrics"]["accepted"]
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=_bundle(onnx_opset=18).metadata,
                                 val_inputs_df=demo_frame("val_inputs"), architecture_doc=None)
    assert build_in_process(bundle, tmp_path / "sdk").export_used == export["settings_used"]
    bad = _fails_with(project, "export", "metadata.onnx_opset=16")
    with pytest.raises(AtlasInputError) as sdk:
        _bundle(onnx_opset=16)
    assert bad.split("metadata.", 1)[1] == str(sdk.value).split("metadata.", 1)[1]  # the same words by both doors
