"""The pipeline matrix's cases through the SDK door: `push_to_mlflow` into one sqlite store, each run
then verified as `atlas-bundle verify` does. `escalation.enabled` is a pipeline setting only (the SDK
always escalates), and an SDK user hands over the model object, so a checkpoint case loads it first."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ml_atlas_sdk import AtlasArtifactBundle, push_to_mlflow
from ml_atlas_sdk.checks.registry import CHECK_SPECS
from ml_atlas_sdk.consumer import verify
from sdk_helpers import demo_frame, demo_metadata, demo_model

OPTIONAL = {"val_outputs_user.pt", "calibration_inputs.pt", "architecture.md"}
CASES = {
    # case -> (AtlasArtifactBundle arguments over the defaults, optional files the bundle must lack)
    "weights": ({}, set()),
    "no_val_outputs": ({"val_outputs_df": None}, {"val_outputs_user.pt"}),
    "no_calibration_inputs": ({"calibration_inputs_df": None}, {"calibration_inputs.pt"}),
    "neither": ({"val_outputs_df": None, "calibration_inputs_df": None}, {"val_outputs_user.pt", "calibration_inputs.pt"}),
    "archdoc_none": ({"architecture_doc": None}, {"architecture.md"}),
    "archdoc_file": ({"architecture_doc": "FILE"}, set()),
    "checks_skip_all": ({"skip_sdk_validations": True}, set()),
    "checkpoint_trusted": ({"model": "CHECKPOINT"}, set()),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdk-store")


def bundle_for(case: str, store: Path) -> AtlasArtifactBundle:
    args = {"model": demo_model(), "metadata": demo_metadata(), "val_inputs_df": demo_frame("val_inputs"),
            "val_outputs_df": demo_frame("val_outputs"), "calibration_inputs_df": demo_frame("calibration_inputs")}
    args.update(CASES[case][0])
    if args.get("architecture_doc") == "FILE":
        doc = store / "architecture.md"
        doc.write_text("# Ranking model\n\nA hand-written architecture note.\n")
        args["architecture_doc"] = str(doc)
    if args["model"] == "CHECKPOINT":
        torch.save(demo_model(), store / "ranking_model.pt")  # the whole module, pickled
        args["model"] = torch.load(store / "ranking_model.pt", weights_only=False)  # trusted: our own file
    return AtlasArtifactBundle(**args)


@pytest.mark.parametrize("case", sorted(CASES))
def test_push_to_mlflow_gives_a_verified_bundle(case, store, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # archdoc auto: the structural document
    monkeypatch.chdir(store)  # the embedded store keeps artifacts in ./mlartifacts
    uri = f"sqlite:///{store / 'mlflow.db'}"
    run_id = push_to_mlflow(bundle_for(case, store), None, tracking_uri=uri, experiment="sdk-matrix")
    assert verify(run_id, uri) == []
    client = MlflowClient(uri)
    files = {Path(a.path).name for a in client.list_artifacts(run_id, "atlas")}
    assert files & OPTIONAL == OPTIONAL - CASES[case][1]
    tags = client.get_run(run_id).data.tags
    assert tags["atlas.bundle_complete"] == "true"
    if case == "checks_skip_all":
        assert tags["atlas.skipped_checks"].split(",") == sorted(CHECK_SPECS)  # every registered check
    if case == "archdoc_file":
        local = Path(client.download_artifacts(run_id, "atlas/architecture.md", str(store / "dl")))
        assert local.read_text() == (store / "architecture.md").read_text()
