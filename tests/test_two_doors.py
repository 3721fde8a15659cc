"""The same inputs give the same bundle files through `dvc repro` and through `push_to_mlflow`."""
from __future__ import annotations

import json

from conftest import run, set_params
from ml_atlas_sdk import AtlasArtifactBundle
from ml_atlas_sdk.sdk import build_in_process
from sdk_helpers import demo_frame, demo_metadata, demo_model

# metadata.json records where the bundle came from (git commit, dvc.lock hash only under DVC).
SOURCE_DEPENDENT = {"metadata.json"}


def test_pipeline_and_sdk_build_byte_identical_bundles(project, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # both doors then write the structural archdoc
    set_params(project, upload={"dry_run": True})
    run(["dvc", "repro", "upload"], project)
    pipeline_dir = project / "build/bundle/atlas"
    pipeline_manifest = json.loads((pipeline_dir / "manifest.json").read_text())

    bundle = AtlasArtifactBundle(
        model=demo_model(), metadata=demo_metadata(),
        val_inputs_df=demo_frame("val_inputs", project), val_outputs_df=demo_frame("val_outputs", project),
        calibration_inputs_df=demo_frame("calibration_inputs", project),
    )
    built = build_in_process(bundle, tmp_path / "sdk")
    sdk_dir, sdk_manifest = built.dir, built.manifest

    assert set(sdk_manifest.files) == set(pipeline_manifest["files"])
    differing = {name for name, entry in sdk_manifest.files.items() if entry["sha256"] != pipeline_manifest["files"][name]["sha256"]}
    assert differing <= SOURCE_DEPENDENT, f"files that differ between the doors: {sorted(differing)}"
    pipeline_meta = json.loads((pipeline_dir / "metadata.json").read_text())
    sdk_meta = json.loads((sdk_dir / "metadata.json").read_text())
    assert {k: v for k, v in pipeline_meta.items() if k != "source"} == {k: v for k, v in sdk_meta.items() if k != "source"}
    assert pipeline_meta["source"]["dvc_lock_sha256"] and sdk_meta["source"]["dvc_lock_sha256"] is None
