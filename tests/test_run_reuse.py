"""One run per model content (issue 23, items 3 and 4): a rebuild at a new commit that changed
nothing atlas reads reuses the complete run and records the commit on it; a changed setting pushes
a new run; runs are named `<model_name>-<short bundle sha>`."""
from __future__ import annotations

import json

from conftest import run
from mlflow_helpers import complete_runs, runs


def _head(project) -> str:
    return run(["git", "rev-parse", "HEAD"], project).stdout.strip()


def test_a_commit_that_changes_nothing_atlas_reads_reuses_the_run(project):
    first_commit = _head(project)
    run(["dvc", "repro"], project)
    (first,) = complete_runs(project)
    tags = first.data.tags
    sha = tags["atlas.bundle_sha256"]
    assert first.info.run_name == f"{tags['atlas.model_name']}-{sha[:12]}"
    assert tags["atlas.git_commit"] == tags["atlas.git_commits"] == first_commit
    # MLflow's own source tags: the UI's "Source" column and its commit link.
    assert tags["mlflow.source.git.commit"] == first_commit and tags["mlflow.source.name"]

    # A comment in a stage script: DVC reruns tensorize and, since its report changed, upload; the
    # bundle's metadata.json records another commit and dvc.lock hash, but atlas reads the same files.
    with open(project / "stages/tensorize.py", "a") as handle:
        handle.write("# a comment atlas never reads\n")
    run(["git", "commit", "-qam", "comment only"], project)
    second_commit = _head(project)
    rebuilt = run(["dvc", "repro"], project)
    assert "Running stage 'upload'" in rebuilt.stdout
    assert f"reused complete run {first.info.run_id}" in rebuilt.stdout
    assert f"recorded commit {second_commit}" in rebuilt.stdout
    assert json.loads((project / "build/bundle/atlas/metadata.json").read_text())["source"]["git_commit"] == second_commit
    (only,) = runs(project)
    assert only.info.run_id == first.info.run_id
    assert only.data.tags["atlas.git_commit"] == first_commit  # what its metadata.json says
    assert only.data.tags["atlas.git_commits"] == f"{first_commit} {second_commit}"
    assert json.loads((project / "reports/upload.json").read_text())["status"] == "reused"

    # A changed setting is another bundle: a new run, named after its own sha.
    run(["python", "-m", "ml_atlas_sdk.pipeline.params", "drift.tolerance_max_abs=0.06"], project)
    changed = run(["dvc", "repro"], project)
    assert "pushed run" in changed.stdout
    after = complete_runs(project)
    assert len(after) == 2
    (new,) = [r for r in after if r.info.run_id != first.info.run_id]
    assert new.info.run_name == f"{new.data.tags['atlas.model_name']}-{new.data.tags['atlas.bundle_sha256'][:12]}"
    assert new.data.tags["atlas.content_sha256"] != only.data.tags["atlas.content_sha256"]


def test_the_commit_list_keeps_the_first_and_the_newest_within_a_tag():
    from ml_atlas_sdk.reuse_key import MAX_TAG_CHARS, with_commit

    assert with_commit("a", "a") is None and with_commit("a", None) is None  # nothing new to record
    assert with_commit("", "a") == "a" and with_commit("a b", "c") == "a b c"
    listed = " ".join(f"{i:040x}" for i in range(200))
    kept = with_commit(listed, "f" * 40).split()
    assert len(" ".join(kept)) <= MAX_TAG_CHARS and kept[0] == f"{0:040x}" and kept[-1] == "f" * 40
