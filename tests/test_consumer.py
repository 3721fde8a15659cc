"""atlas-bundle verify and resolve against a real MLflow store (sqlite + local artifacts)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml_atlas_sdk import AtlasArtifactBundle, AtlasBundleError, consumer, push_to_mlflow, resolve
from ml_atlas_sdk.bundle import bundle_sha256
from ml_atlas_sdk.consumer import verify
from ml_atlas_sdk.provenance import file_sha256
from sdk_helpers import demo_frame, demo_metadata, demo_model
from servers import free_port


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    os.environ.pop("ANTHROPIC_API_KEY", None)  # the structural architecture.md, no network
    """One good bundle pushed through the SDK; tests copy its run's artifacts before damaging them."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), val_inputs_df=demo_frame("val_inputs"),
                                 val_outputs_df=demo_frame("val_outputs"),
                                 calibration_inputs_df=demo_frame("calibration_inputs"))  # every SPEC file
    cwd = Path.cwd()
    try:
        os.chdir(root)  # the embedded store keeps artifacts in ./mlartifacts
        run_id = push_to_mlflow(bundle, None, tracking_uri=uri)
    finally:
        os.chdir(cwd)
    return uri, run_id


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml_atlas_sdk.cli", *args], capture_output=True, text=True, timeout=300)


def _artifact_dir(uri: str, run_id: str) -> Path:
    return Path(MlflowClient(uri).get_run(run_id).info.artifact_uri.removeprefix("file://")) / "atlas"


def test_verify_passes_on_a_good_bundle(pushed):
    uri, run_id = pushed
    result = _cli("verify", run_id, "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout


@pytest.mark.parametrize("name", ["model.onnx", "metadata.json", "val_inputs.pt", "val_outputs.pt", "calibration_inputs.pt",
                                  "val_outputs_user.pt", "architecture.md", "validation_report.json", "manifest.json"])
def test_one_flipped_byte_fails_naming_the_file(pushed, name):
    uri, run_id = pushed
    target = _artifact_dir(uri, run_id) / name
    original = target.read_bytes()
    try:
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x01
        target.write_bytes(bytes(damaged))
        result = _cli("verify", run_id, "--tracking-uri", uri)
    finally:
        target.write_bytes(original)
    assert result.returncode == 1
    assert any(line.startswith(f"{name}: ") for line in result.stderr.splitlines()), result.stderr


def test_incomplete_run_is_refused(pushed):
    uri, run_id = pushed
    client = MlflowClient(uri)
    client.delete_tag(run_id, "atlas.bundle_complete")
    try:
        result = _cli("verify", run_id, "--tracking-uri", uri)
    finally:
        client.set_tag(run_id, "atlas.bundle_complete", "true")
    assert result.returncode == 1 and "incomplete bundle" in result.stderr


def test_resolve_caches_by_sha_rechecks_and_works_offline(pushed, tmp_path):
    uri, run_id = pushed
    cache = tmp_path / "cache"
    first = resolve(run_id, uri, cache)
    assert first.path.is_relative_to(cache / first.bundle_sha256)
    assert first.metadata.model_name == "demo_ranking"

    offline = resolve(run_id, "http://127.0.0.1:9", cache)  # nothing listens there
    assert offline.path == first.path

    (first.path / "val_inputs.pt").write_bytes(b"corrupted")
    with pytest.raises(AtlasBundleError):
        resolve(run_id, "http://127.0.0.1:9", cache)  # offline and the cache fails its manifest
    repaired = resolve(run_id, uri, cache)  # online again: downloaded afresh
    assert (repaired.path / "val_inputs.pt").read_bytes() != b"corrupted"
    shutil.rmtree(cache)


def _forged_run(uri: str, run_id: str, tmp: Path, edit) -> tuple[str, Path]:
    """A FINISHED, complete run in the same store holding a copy of the bundle changed by `edit(dir, manifest)`.

    The manifest is rewritten to match, so the forged bundle is self-consistent; its sha is the new run's tag.
    """
    client = MlflowClient(uri)
    local = Path(client.download_artifacts(run_id, "atlas", str(tmp / f"src-{len(list(tmp.iterdir()))}")))
    manifest = json.loads((local / "manifest.json").read_text())
    edit(local, manifest["files"])
    manifest["bundle_sha256"] = bundle_sha256(manifest["files"])
    (local / "manifest.json").write_text(json.dumps(manifest))
    forged = client.create_run(client.get_run(run_id).info.experiment_id).info.run_id
    client.log_artifacts(forged, str(local), "atlas")
    client.set_tag(forged, "atlas.bundle_sha256", manifest["bundle_sha256"])
    client.set_tag(forged, "atlas.bundle_complete", "true")
    client.set_terminated(forged, "FINISHED")
    return forged, local


def _retitle(local: Path, files: dict) -> None:
    doc = local / "architecture.md"
    doc.write_text(doc.read_text() + "\nforged\n")
    files["architecture.md"] = {"sha256": file_sha256(doc), "size": doc.stat().st_size}


def test_resolve_refuses_a_cache_swapped_for_another_self_consistent_bundle(pushed, tmp_path):
    uri, run_id = pushed
    cache = tmp_path / "cache"
    good = resolve(run_id, uri, cache)
    _, forged_dir = _forged_run(uri, run_id, tmp_path, _retitle)
    shutil.rmtree(good.path)
    shutil.copytree(forged_dir, good.path)  # consistent with its own manifest, not with the run's tag

    with pytest.raises(AtlasBundleError, match="bundle_sha256") as offline:
        resolve(run_id, "http://127.0.0.1:9", cache)
    assert "\n" not in str(offline.value)
    again = resolve(run_id, uri, cache)  # online: the poisoned copy is replaced, never returned
    assert b"forged" not in (again.path / "architecture.md").read_bytes()
    assert json.loads((again.path / "manifest.json").read_text())["bundle_sha256"] == good.bundle_sha256

    # A cache folder that is a link to another bundle's folder is refused by name, too.
    other = cache / ("0" * 64)
    shutil.move(str(good.path.parent), other)
    good.path.parent.symlink_to(other)
    with pytest.raises(AtlasBundleError, match="not named by the bundle_sha256"):
        resolve(run_id, "http://127.0.0.1:9", cache)


@pytest.mark.parametrize("name", ["/etc/hostname", "../escape.txt", "sub/../../escape.txt", "a\\b.txt"])
def test_manifest_names_outside_the_bundle_are_refused(pushed, tmp_path, name):
    uri, run_id = pushed
    outside = Path("/etc/hostname") if name.startswith("/") else tmp_path / "escape.txt"
    outside.exists() or outside.write_text("not part of any bundle\n")

    def point_outside(local: Path, files: dict) -> None:
        files[name] = {"sha256": file_sha256(outside), "size": outside.stat().st_size}  # the hash matches

    forged, _ = _forged_run(uri, run_id, tmp_path, point_outside)
    problems = verify(forged, uri)
    assert problems == [f"{name}: not a plain relative name inside the bundle (no leading /, backslash, drive or NUL)"] \
        or problems == [f"{name}: not a plain relative name inside the bundle (no empty, . or .. parts)"], problems
    with pytest.raises(AtlasBundleError, match="plain relative name"):
        resolve(forged, uri, tmp_path / "cache")


def test_verify_and_resolve_refuse_a_run_that_is_not_finished(pushed, tmp_path):
    uri, run_id = pushed
    cache = tmp_path / "cache"
    resolve(run_id, uri, cache)  # cached while good: the cache must not outvote the store
    client = MlflowClient(uri)
    client.set_terminated(run_id, "FAILED")
    try:
        problems = verify(run_id, uri)
        with pytest.raises(AtlasBundleError, match="status is FAILED, not FINISHED"):
            resolve(run_id, uri, cache)
    finally:
        client.set_terminated(run_id, "FINISHED")
    assert problems == [f"run {run_id}: status is FAILED, not FINISHED; refusing it"]


@pytest.mark.parametrize("tag", [None, "", "../../../../tmp/x", "ABC"])
def test_a_run_without_a_valid_sha_tag_says_so(pushed, tag):
    uri, run_id = pushed
    client = MlflowClient(uri)
    original = client.get_run(run_id).data.tags["atlas.bundle_sha256"]
    client.delete_tag(run_id, "atlas.bundle_sha256") if tag is None else client.set_tag(run_id, "atlas.bundle_sha256", tag)
    try:
        problems = verify(run_id, uri)
    finally:
        client.set_tag(run_id, "atlas.bundle_sha256", original)
    assert len(problems) == 1 and "no valid atlas.bundle_sha256 tag" in problems[0], problems


def test_store_errors_with_an_empty_message_give_one_line(pushed, monkeypatch):
    """Issue 13: `str(exc).splitlines()[0]` raised IndexError on an exception with no message.

    A real MLflow store does not raise one on demand, so the client is replaced for this test only.
    """
    uri, run_id = pushed

    class Silent:
        def get_run(self, run_id):
            raise RuntimeError("")

    monkeypatch.setattr(consumer, "client_for", lambda uri: Silent())
    assert verify(run_id, uri) == [f"run {run_id}: cannot be read from {uri} (RuntimeError)"]


def test_a_password_in_the_tracking_uri_never_reaches_an_error_line(pushed, tmp_path):
    uri, run_id = pushed
    secret_uri = f"http://atlas:PW-SECRET-4711@127.0.0.1:{free_port()}"  # nothing listens there
    problems = verify(run_id, secret_uri)
    assert len(problems) == 1 and f"127.0.0.1:{secret_uri.rsplit(':', 1)[1]}" in problems[0], problems
    with pytest.raises(AtlasBundleError) as raised:
        resolve(run_id, secret_uri, tmp_path / "cache")
    result = _cli("verify", run_id, "--tracking-uri", secret_uri)
    assert result.returncode == 1 and "MLFLOW_TRACKING_PASSWORD" in result.stderr
    for text in (problems[0], str(raised.value), result.stdout + result.stderr):
        assert "PW-SECRET" not in text and "SECRET-4711" not in text, text


def _edited_copy(uri: str, run_id: str, tmp_path: Path, edit) -> Path:
    """A copy of the pushed bundle with `edit(folder)` applied and its manifest rewritten to match."""
    from ml_atlas_sdk.bundle import MANIFEST, build_manifest, write_json

    copy = tmp_path / "atlas"
    shutil.copytree(_artifact_dir(uri, run_id), copy)
    edit(copy)
    write_json(copy / MANIFEST, build_manifest(copy).to_dict())
    return copy


def test_verify_reports_the_producers_onnx_cross_check_lines(pushed, tmp_path):
    import onnx

    from ml_atlas_sdk.checks.onnx_checks import onnx_cross_check
    from ml_atlas_sdk.consumer import check_bundle_dir
    from ml_atlas_sdk.metadata import BundleMetadata

    def fix_batch_axis(folder: Path) -> None:
        model = onnx.load(str(folder / "model.onnx"))
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # replaces the symbolic batch dim
        onnx.save(model, str(folder / "model.onnx"))

    copy = _edited_copy(*pushed, tmp_path, fix_batch_axis)
    meta = BundleMetadata.model_validate_json((copy / "metadata.json").read_text())
    finding = onnx_cross_check(copy / "model.onnx", meta, meta.onnx_opset)
    name = meta.input_names[0]
    assert finding.details["problems"] == [f"{name!r}: axis 0 is 4, not a symbolic batch dim"]
    assert check_bundle_dir(copy) == [f"model.onnx: {name!r}: axis 0 is 4, not a symbolic batch dim"]


def test_metadata_json_is_read_through_the_producers_schema(pushed, tmp_path):
    from ml_atlas_sdk.consumer import check_bundle_dir
    from ml_atlas_sdk.metadata import BundleMetadata

    written = json.loads((_artifact_dir(*pushed) / "metadata.json").read_text())
    assert {"export", "versions", "source", "bundle_schema_version"} <= set(written)
    assert BundleMetadata.model_validate(written).model_dump(mode="json", exclude={"precision_hints"}) == written

    def add(key: str, value):
        def edit(folder: Path) -> None:
            (folder / "metadata.json").write_text(json.dumps({**written, key: value}))
        return edit

    hinted = _edited_copy(*pushed, tmp_path / "hinted", add("precision_hints", {"modules": ["dense_proj.0"]}))
    assert check_bundle_dir(hinted) == []  # SPEC's optional precision_hints is part of the schema
    unknown = _edited_copy(*pushed, tmp_path / "unknown", add("colour", "blue"))
    assert check_bundle_dir(unknown) == ["metadata.json.colour: Extra inputs are not permitted"]


def test_a_deleted_run_is_neither_verified_nor_resolved(pushed, tmp_path):
    """Issue 25: a run in MLflow's trash (deleted, not yet purged) verified and resolved as good."""
    uri, run_id = pushed
    cache = tmp_path / "cache"
    resolve(run_id, uri, cache)  # cached while good: the cache must not outvote the store
    client = MlflowClient(uri)
    client.delete_run(run_id)
    try:
        problems = verify(run_id, uri)
        with pytest.raises(AtlasBundleError, match="is deleted"):
            resolve(run_id, uri, cache)
    finally:
        client.restore_run(run_id)
    assert problems == [f"run {run_id}: is deleted (in MLflow's trash); refusing it"]


def test_offline_resolve_refuses_a_forged_cache_index(pushed, tmp_path):
    """Issue 25: offline, the one-line index runs/<run_id> named any cached bundle, and resolve
    returned it for this run. Only a bundle verified online as this run's is returned offline."""
    uri, run_id = pushed
    cache = tmp_path / "cache"
    good = resolve(run_id, uri, cache)
    forged, forged_dir = _forged_run(uri, run_id, tmp_path, _retitle)
    other = resolve(forged, uri, cache)  # another self-consistent bundle, rightly cached for its own run
    assert other.bundle_sha256 != good.bundle_sha256
    (cache / "runs" / run_id).write_text(other.bundle_sha256)  # the index rewritten to point at it

    with pytest.raises(AtlasBundleError, match=f"never verified online as run {run_id}'s") as offline:
        resolve(run_id, "http://127.0.0.1:9", cache)
    assert "\n" not in str(offline.value)
    assert resolve(forged, "http://127.0.0.1:9", cache).path == other.path  # its own run still resolves offline
    assert resolve(run_id, uri, cache).path == good.path  # online: the store names the right bundle
    assert resolve(run_id, "http://127.0.0.1:9", cache).path == good.path
