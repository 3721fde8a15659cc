"""The build is described once (ml_atlas_sdk.build) and each DVC stage depends on exactly the
settings it reads: a real `dvc repro` in one project copy for the module shows what reruns."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, make_project_copy, run, set_params
from ml_atlas_sdk import AtlasArtifactBundle
from ml_atlas_sdk.build import DATA_FILES, STAGE_ORDER, TENSOR_FILES, VAL_OUTPUTS, sdk_argument, tensor_file
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.sdk import build_in_process
from ml_atlas_sdk.settings import DataSettings
from sdk_helpers import demo_frame, demo_metadata, demo_model


def stages_run(proc) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    project = make_project_copy(tmp_path_factory.mktemp("layout") / "project")
    set_params(project, archdoc={"source": None}, upload={"dry_run": True})
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "built"], project)
    return project


def test_check_stages_list_checks_skip_not_the_whole_section(built):
    stages = yaml.safe_load((built / "dvc.yaml").read_text())["stages"]
    reading_skip = {name for name, stage in stages.items() if "checks.skip" in stage.get("params", [])}
    assert reading_skip == set(STAGE_ORDER)
    assert not [name for name, stage in stages.items() if "checks" in stage.get("params", [])]


def test_calib_min_rows_reruns_only_tensorize_and_what_its_report_feeds(built):
    """It used to rerun every check stage (they listed all of `checks`) and re-export the model."""
    set_params(built, checks={"calib_min_rows": 7})
    status = run(["dvc", "status", "--json"], built).stdout
    assert set(yaml.safe_load(status)) == {"tensorize"}
    reran = stages_run(run(["dvc", "repro"], built))
    # Its tensors are unchanged; only reports/tensorize.json (the threshold it checked) feeds upload.
    assert reran == {"tensorize", "upload"}
    calib = next(c for c in json.loads((built / "reports/tensorize.json").read_text())["checks"]
                 if c["name"] == "calib_sample_count")
    assert calib["details"]["min_rows"] == 7


def test_checks_skip_still_reruns_every_check_stage(built):
    set_params(built, checks={"skip": ["drift"]})
    status = yaml.safe_load(run(["dvc", "status", "--json"], built).stdout)
    assert set(status) == set(STAGE_ORDER)


def test_every_data_setting_has_an_sdk_argument_and_a_bundle_file():
    """Both doors walk DATA_FILES: the pipeline reads data.<key>, the SDK the `<key>_df` argument."""
    assert set(DATA_FILES) == set(DataSettings.model_fields)
    assert {sdk_argument(key) for key in DATA_FILES} <= set(AtlasArtifactBundle.model_fields)
    assert {tensor_file(stem) for stem in (*DATA_FILES.values(), VAL_OUTPUTS)} == set(TENSOR_FILES)


def test_sdk_error_names_the_argument_the_user_passed():
    """The SDK used to name val_outputs_df by its bundle file, as `val_outputs_user_df`."""
    outputs = demo_frame("val_outputs")
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                                 val_outputs_df=outputs.drop(columns=outputs.columns[0]), architecture_doc=None)
    with pytest.raises(AtlasInputError, match=r"^val_outputs_df: missing column"):
        build_in_process(bundle, Path("/nonexistent-never-written"))


def test_this_repository_tracks_no_build_results():
    """README 'What to commit': src/ is a dependency of every stage, so a committed demo dvc.lock or
    report would go stale with each code change; user projects commit theirs."""
    tracked = run(["git", "ls-files", "dvc.lock", "reports", "build", "mlflow.db"], REPO_ROOT).stdout.split()
    assert tracked == []
