"""`atlas-bundle init` (issue 9, items 1 and 5): zoo models returning one tensor, a dict and a tuple,
with padded sequence axes, get conf files from which the pipeline pushes without edits; what init
cannot infer is refused in one line, before anything is written."""
from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, make_project_copy, run
from ml_atlas_sdk import AtlasArtifactBundle, push_to_mlflow
from ml_atlas_sdk.cli import main as cli
from ml_atlas_sdk.consumer import verify
from ml_atlas_sdk.onboarding.conf_files import CONFIG, write_config
from ml_atlas_sdk.models import load_model
from ml_atlas_sdk.onboarding.conf_files import recompose
from ml_atlas_sdk.pipeline.params import main as params_main
from ml_atlas_sdk.settings import Settings
from zoo import models as zoo_models
from zoo.cases import write_layout

ROWS, SEQ, STEPS = 48, 12, 10
GROUPS = ("model", "metadata", "data")


def _padded(rng, values: np.ndarray) -> np.ndarray:
    """Rows padded with zeros after a real length that differs between rows (axis 1)."""
    lengths = rng.integers(values.shape[1] // 3, values.shape[1] + 1, size=len(values))
    keep = np.arange(values.shape[1])[None, :] < lengths[:, None]
    return values * keep.reshape(keep.shape + (1,) * (values.ndim - 2))


def _write_case(project: Path, name: str, family: str, inputs: dict, layouts: dict, with_outputs: bool = False) -> None:
    folder = project / "data" / name
    folder.mkdir(parents=True)
    write_layout(inputs, layouts, folder / "val_inputs.parquet")
    model = zoo_models.build(family)
    torch.save(model.state_dict(), folder / "weights.pt")
    if with_outputs:  # the user's own reference run, saved in float64 as users do
        with torch.no_grad():
            tags, hidden = model(*(torch.from_numpy(v) for v in inputs.values()))
        write_layout({"tags": tags.double().numpy(), "last_hidden": hidden.double().numpy()},
                     {"tags": "fixed_list", "last_hidden": "fixed_list"}, folder / "val_outputs.parquet")


def _init_args(name: str, family: str, *extra: str) -> list[str]:
    return ["init", name, "--factory", "zoo_models:build", "--kwargs", f"{{family: {family}}}",
            "--weights", f"data/{name}/weights.pt", "--val-inputs", f"data/{name}/val_inputs.parquet", *extra]


def _init_in_process(project: Path, *args: str) -> str:
    """`atlas-bundle init` without a new interpreter (what it prints); the process's sys.path and
    working directory are left as they were."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.chdir(project)
        mp.syspath_prepend(str(project / "models"))
        assert cli(list(args)) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory) -> dict:
    """One project copy and three models, onboarded by `atlas-bundle init`; the GRU, which the
    defaults switch to, then goes through `dvc repro`. The other two keep the defaults (--no-switch)
    and go through the SDK door, then the pipeline by the override init printed (last test).

    - zoo_gru: one tensor out; padded token ids (int32 in the file), a list column;
    - zoo_ranker: a dict of two heads out; four inputs (scalars and lists, int32 and float64);
    - zoo_lstm: a tuple out, named after the reference outputs' columns; padded float steps."""
    project = make_project_copy(tmp_path_factory.mktemp("init") / "project")
    shutil.copy(zoo_models.__file__, project / "models" / "zoo_models.py")
    rng = np.random.default_rng(9)
    tokens = _padded(rng, rng.integers(1, zoo_models.VOCAB, (ROWS, SEQ))).astype(np.int32)
    _write_case(project, "zoo_gru", "gru", {"tokens": tokens}, {"tokens": "list"})
    ranker = {"dense": rng.normal(size=(ROWS, 3)), "age": rng.uniform(0.18, 0.8, ROWS),  # not forward's order
              "country": rng.integers(0, 20, ROWS).astype(np.int32), "item_ids": rng.integers(1, zoo_models.VOCAB, (ROWS, 6))}
    _write_case(project, "zoo_ranker", "bag_ranker_dict", ranker,
                {"item_ids": "fixed_list", "country": "scalar", "age": "scalar", "dense": "list"})
    x = _padded(rng, rng.normal(size=(ROWS, STEPS, 8)).astype(np.float32))
    _write_case(project, "zoo_lstm", "lstm", {"x": x}, {"x": "fixed_list"}, with_outputs=True)
    before = (project / "conf/config.yaml").read_text(), (project / "params.yaml").read_text()
    printed = {
        "zoo_lstm": _init_in_process(project, *_init_args("zoo_lstm", "lstm", "--no-switch", "--val-outputs",
                                                          "data/zoo_lstm/val_outputs.parquet")),
        "zoo_ranker": _init_in_process(project, *_init_args("zoo_ranker", "bag_ranker_dict", "--no-switch",
                                                            "--task-type", "ranking")),
    }
    unswitched = (project / "conf/config.yaml").read_text(), (project / "params.yaml").read_text()
    printed["zoo_gru"] = run(["atlas-bundle", *_init_args("zoo_gru", "gru", "--output-names", "logits",
                                                          "--task-type", "classification")], project).stdout
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "atlas-bundle init"], project)
    return {"project": project, "printed": printed, "no_switch_kept_defaults": before == unswitched,
            "repro": run(["dvc", "repro"], project, check=False, timeout=900)}


def _metadata(project: Path, name: str) -> dict:
    return yaml.safe_load((project / "conf/metadata" / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def sdk_store(tmp_path_factory) -> str:
    """One sqlite store for the SDK pushes (a fresh one costs seconds of migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('init-sdk') / 'mlflow.db'}"


def _sdk_push(project: Path, name: str, uri: str, monkeypatch) -> tuple[Settings, str]:
    """The composition with NAME's override, validated, and pushed through the SDK door."""
    monkeypatch.chdir(project)  # model.code_dirs and data paths are relative to the project
    monkeypatch.syspath_prepend(str(project / "models"))
    settings = recompose(project, name, switched=False)
    frames = {key: pd.read_parquet(path) for key, path in settings.data.model_dump().items() if path}
    bundle = AtlasArtifactBundle(model=load_model(settings.model), metadata=settings.metadata,
                                 val_inputs_df=frames["val_inputs"], val_outputs_df=frames.get("val_outputs"))
    run_id = push_to_mlflow(bundle, None, tracking_uri=uri, experiment="init")
    assert verify(run_id, uri) == []
    return settings, run_id


def test_padded_tokens_become_a_dynamic_axis_and_the_defaults_switch(onboarded, monkeypatch):
    project, printed = onboarded["project"], onboarded["printed"]["zoo_gru"]
    meta = _metadata(project, "zoo_gru")
    assert meta["input_names"] == ["tokens"] and meta["output_names"] == ["logits"]
    assert meta["input_shapes"] == {"tokens": [-1, -1]} and meta["output_shape"] == {"logits": [-1, 4]}
    assert meta["dynamic_axes"] == {"tokens": {0: "batch", 1: "seq_len"}, "logits": {0: "batch"}}
    assert meta["input_dtypes"] == {"tokens": "int64"}  # the policy's default for the file's int32, said below
    assert "the file holds int32, the bundle int64" in printed and "dynamic 'seq_len'" in printed
    model = yaml.safe_load((project / "conf/model/zoo_gru.yaml").read_text())
    assert (model["factory"], model["kwargs"], model["code_dirs"]) == ("zoo_models:build", {"family": "gru"}, ["models"])
    config = (project / "conf/config.yaml").read_text()
    assert all(f"  - {group}: zoo_gru\n" in config for group in GROUPS)
    assert config.startswith((REPO_ROOT / "conf/config.yaml").read_text().split("defaults:")[0])  # comments kept
    monkeypatch.chdir(project)
    assert params_main(["--check"]) == 0  # params.yaml is the composition of conf/


def test_dvc_repro_pushes_what_init_wrote(onboarded, monkeypatch, capsys):
    project, repro = onboarded["project"], onboarded["repro"]
    assert repro.returncode == 0, f"{repro.stdout[-3000:]}\n{repro.stderr[-3000:]}"
    upload = json.loads((project / "reports/upload.json").read_text())
    assert upload["status"] == "pushed", upload
    uri = f"sqlite:///{project / 'mlflow.db'}"
    tags = MlflowClient(uri).get_run(upload["run_id"]).data.tags
    assert tags["atlas.model_name"] == "zoo_gru"
    assert {v for k, v in tags.items() if k.startswith("atlas.check.")} <= {"passed", "skipped"}, tags
    monkeypatch.chdir(project)  # the copy's own mlartifacts/
    assert cli(["verify", upload["run_id"], "--tracking-uri", uri]) == 0, capsys.readouterr().err


def test_dict_outputs_are_named_by_their_keys(onboarded, sdk_store, monkeypatch):
    project, printed = onboarded["project"], onboarded["printed"]["zoo_ranker"]
    meta = _metadata(project, "zoo_ranker")
    assert meta["input_names"] == ["item_ids", "country", "age", "dense"]  # forward's order
    assert meta["output_names"] == ["ctr", "grade"]
    assert meta["input_shapes"] == {"item_ids": [-1, 6], "country": [-1], "age": [-1], "dense": [-1, 3]}
    assert meta["output_shape"] == {"ctr": [-1, 1], "grade": [-1, 3]}
    assert meta["input_dtypes"] == {"item_ids": "int64", "country": "int64", "age": "float32", "dense": "float32"}
    # Every row has 6 items, so the axis stays fixed; EmbeddingBag takes any count, which init says.
    assert "item_ids[1]: length 6 in every row, kept fixed; forward also takes length 5" in printed
    _sdk_push(project, "zoo_ranker", sdk_store, monkeypatch)


def test_no_switch_prints_the_override_and_the_composition_pushes(onboarded, sdk_store, monkeypatch):
    """Tuple outputs named after the reference outputs' columns; the output axis that follows the
    padded input's length shares its name."""
    project, printed = onboarded["project"], onboarded["printed"]["zoo_lstm"]
    assert onboarded["no_switch_kept_defaults"]
    assert "dvc exp run -S model=zoo_lstm -S metadata=zoo_lstm -S data=zoo_lstm" in printed
    settings, run_id = _sdk_push(project, "zoo_lstm", sdk_store, monkeypatch)
    meta = settings.metadata
    assert meta.output_names == ["tags", "last_hidden"]
    assert (meta.input_shapes, meta.output_shape) == ({"x": [-1, -1, 8]}, {"tags": [-1, -1, 4], "last_hidden": [-1, 16]})
    assert meta.axes_of("x") == meta.axes_of("tags") == {0: "batch", 1: "seq_len"}
    assert MlflowClient(sdk_store).get_run(run_id).data.tags["atlas.check.drift"] == "passed"


# Refusals: in-process, on a folder holding only conf/config.yaml and the data.
X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
REFUSALS = {
    "column_without_parameter": ("masked", {"x": X, "y": X}, "column(s) ['y'] match no parameter of "
                                                             "Masked.forward(x, mask=…, bias=…)"),
    "parameter_skipped": ("masked", {"x": X, "bias": X}, "takes ['mask'] before 'bias' and inputs are passed by position"),
    "keyword_only": ("keyword_only", {"x": X}, "KeywordOnly.forward(x, *, scale) needs keyword-only argument(s) ['scale']"),
    "nested_output": ("nested_output", {"x": X}, "returned (Tensor[2, 2], (Tensor[2, 2], Tensor[2, 2])), but each "
                                                 "ONNX output is one tensor"),
    "batch_not_first": ("batch_last", {"x": X}, "model output 'output': shape [2, 2] for 2 input rows and [2, 3] for 3"),
    "ragged_sequence": ("masked", {"x": [[0.0] * 4, [0.0] * 3] * 4}, "column 'x': cells differ in length along axis 1 "
                                                                     "(row 1: 3, row 0: 4)"),
    "conf_exists": ("masked", {"x": X}, "conf/metadata/new.yaml already exist: pass --force"),
    "reference_disagrees": ("masked", {"x": X}, "ref.parquet disagrees with the metadata inferred from forward and "
                                                "--val-inputs: val_outputs_user: column 'output': cell shape [3]"),
}
REFERENCE = {"output": np.zeros((8, 3), dtype=np.float32)}  # forward returns 2 values per row


def _write_parquet(columns: dict, path: Path) -> None:
    pq.write_table(pa.table({n: list(v) if isinstance(v, np.ndarray) else v for n, v in columns.items()}), path)


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_one_line_and_write_nothing(case, tmp_path, monkeypatch, capsys):
    kind, columns, expected = REFUSALS[case]
    (tmp_path / "conf/metadata").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "conf/config.yaml", tmp_path / "conf/config.yaml")
    if case == "conf_exists":
        (tmp_path / "conf/metadata/new.yaml").write_text("model_name: mine\n")
    _write_parquet(columns, tmp_path / "val.parquet")
    reference = ["--val-outputs", "ref.parquet"] if case == "reference_disagrees" else []
    if reference:
        _write_parquet(REFERENCE, tmp_path / "ref.parquet")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    code = cli(["init", "new", "--factory", "fixture_models.init_models:build", "--kwargs", f"{{kind: {kind}}}",
                "--val-inputs", "val.parquet", *reference])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "conf/config.yaml").read_text() == (REPO_ROOT / "conf/config.yaml").read_text()


def test_the_printed_override_pushes_each_other_model_through_dvc(onboarded, tmp_path, monkeypatch, capsys):
    """The tuple- and dict-output models through the whole pipeline too, by the `dvc exp run -S ...`
    line init printed for them, in a copy of the onboarded project (its store moves with it)."""
    project = tmp_path / "copy"
    shutil.copytree(onboarded["project"], project, symlinks=True)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.chdir(project)  # the copy's own mlartifacts/ for verify
    for name in ("zoo_lstm", "zoo_ranker"):
        (line,) = [ln.strip() for ln in onboarded["printed"][name].splitlines() if f"-S model={name}" in ln]
        command = shlex.split(line[line.index("dvc exp run"):].split("`")[0])
        pushed = run(command, project, timeout=900)
        upload = json.loads((project / "reports/upload.json").read_text())
        assert upload["status"] == "pushed", pushed.stdout[-3000:]
        tags = MlflowClient(uri).get_run(upload["run_id"]).data.tags
        assert tags["atlas.model_name"] == name
        assert {v for k, v in tags.items() if k.startswith("atlas.check.")} <= {"passed", "skipped"}, tags
        assert cli(["verify", upload["run_id"], "--tracking-uri", uri]) == 0, capsys.readouterr().err


def test_config_files_are_replaced_whole_or_left_as_they_were(tmp_path):
    """init rewrites conf/config.yaml and writes conf/ files through one atomic writer: a write that
    fails halfway (here: text the file's encoding cannot hold) leaves the previous file and no temp."""
    (tmp_path / CONFIG).parent.mkdir(parents=True)
    (tmp_path / CONFIG).write_text("defaults:\n  - model: demo\n")
    with pytest.raises(UnicodeEncodeError):
        write_config(tmp_path, "defaults:\n  - model: " + "x" * 100_000 + "\udc80\n")
    assert (tmp_path / CONFIG).read_text() == "defaults:\n  - model: demo\n"
    assert sorted(p.name for p in (tmp_path / CONFIG).parent.iterdir()) == [(tmp_path / CONFIG).name]
    write_config(tmp_path, "defaults:\n  - model: mine\n")
    assert (tmp_path / CONFIG).read_text() == "defaults:\n  - model: mine\n"
