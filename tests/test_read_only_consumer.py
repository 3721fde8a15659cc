"""Reading never writes (issue 23, item 6): `atlas-bundle verify` and `resolve` never create a
tracking store; inside a project they read its `mlflow.tracking_uri`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from ml_atlas_sdk import AtlasArtifactBundle, AtlasBundleError, push_to_mlflow, resolve
from ml_atlas_sdk.read_store import default_tracking_uri
from sdk_helpers import demo_frame, demo_metadata, demo_model


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, **extra}


def _verify(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml_atlas_sdk.cli", "verify", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def project_with_a_run(tmp_path_factory):
    """A folder with a params.yaml naming its store (a relative sqlite path) and one pushed run."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump({"mlflow": {"tracking_uri": "sqlite:///store/atlas.db"}}))
    (root / "store").mkdir()
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                                 architecture_doc=None)
    run_id = push_to_mlflow(bundle, None, tracking_uri=f"sqlite:///{root / 'store/atlas.db'}", experiment="reading")
    return root, run_id


def test_verify_in_an_empty_folder_leaves_it_empty(tmp_path):
    result = _verify(tmp_path, "0123456789abcdef0123456789abcdef")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no tracking store at" in lines[0] and "reading never creates one" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_resolve_in_an_empty_folder_leaves_it_empty(tmp_path, monkeypatch):
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(AtlasBundleError, match="no tracking store at"):
        resolve("0123456789abcdef0123456789abcdef", cache_dir=tmp_path / "cache")
    with pytest.raises(AtlasBundleError, match="no tracking store at"):
        resolve("0123456789abcdef0123456789abcdef", tracking_uri=f"file://{work / 'mlruns'}", cache_dir=tmp_path / "cache")
    assert list(work.iterdir()) == []


def test_inside_a_project_verify_reads_its_store_from_any_subfolder(project_with_a_run):
    root, run_id = project_with_a_run
    sub = root / "notebooks"
    sub.mkdir(exist_ok=True)
    assert default_tracking_uri(sub) == f"sqlite:///{root / 'store/atlas.db'}"
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = _verify(sub, run_id)
    assert result.returncode == 0, result.stderr
    assert "bundle verified" in result.stdout
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # no mlflow.db beside the project's
