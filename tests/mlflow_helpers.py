"""Read back what a pipeline run left in MLflow, through the real client."""
from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient


def client_for_project(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def runs(project: Path, experiment: str = "atlas-bundles"):
    client = client_for_project(project)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=100)


def complete_runs(project: Path, experiment: str = "atlas-bundles"):
    return [r for r in runs(project, experiment) if r.data.tags.get("atlas.bundle_complete") == "true"]
