"""The user's model code misbehaving (issue 8 item 7): one line naming rows, module and file,
exit 2, no traceback, and the user's last frame kept in the stage's report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO_ROOT, make_project_copy, run
from fixture_models import bad_models
from ml_atlas_sdk import AtlasArtifactBundle, push_to_mlflow
from ml_atlas_sdk.demo.ranking import build_model
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.models import build_from_factory, check_forward_signature, load_model, load_weights, run_canonical
from ml_atlas_sdk.settings import ModelSource
from ml_atlas_sdk.tensors import write_frame
from sdk_helpers import demo_metadata, demo_model

FIXTURES = REPO_ROOT / "tests/fixture_models"
CODE_DIR = ["model.code_dirs=[models]", "model.weights=null"]
OOV = "model forward failed on val_inputs rows 256-511 (first failing row 300) in module 'embedding' (Embedding, "


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One project copy with the fixture models in its models/ code dir; each test builds what it needs."""
    root = make_project_copy(tmp_path_factory.mktemp("usercode") / "project")
    for name in ("bad_models.py", "raises_at_import.py"):
        shutil.copy2(FIXTURES / name, root / "models" / name)
    frame = pd.read_parquet(root / "data/demo/val_inputs.parquet")
    for row in (100, 300):  # an out-of-vocabulary token (the demo vocabulary has 1000 ids)
        bad = frame.copy()
        tokens = [np.asarray(v).copy() for v in bad["tokens"]]
        tokens[row][3] = 5000
        bad["tokens"] = tokens
        write_frame(bad, root / f"data/oov_row{row}.parquet")
    return root


def _fails_with(project: Path, stage: str, *overrides: str) -> str:
    result = run(["python", f"stages/{stage}.py", *overrides], project, check=False)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0].removeprefix("error: ")


def _tensorize(project: Path, *overrides: str) -> None:
    run(["python", "stages/tensorize.py", *overrides], project)


def _report(project: Path, stage: str) -> dict:
    return json.loads((project / f"reports/{stage}.json").read_text())


def test_forward_raising_on_some_rows_names_rows_module_and_frame(project, monkeypatch, tmp_path):
    _tensorize(project, "data.val_inputs=data/oov_row300.parquet")
    line = _fails_with(project, "canonical_outputs")
    assert line.startswith(OOV) and "ml_atlas_sdk/demo/ranking.py:21): IndexError: index out of range in self" in line
    error = _report(project, "canonical_outputs")["error"]
    assert error["message"] == line and error["module"] == "embedding" and error["first_failing_row"] == 300
    assert error["user_frame"]["function"] == "forward" and error["user_frame"]["line"] == 21
    assert error["user_frame"]["code"].startswith("pooled = self.embedding(tokens)")
    assert not (project / "build/canonical/val_outputs.pt").exists()

    # The SDK door raises the very same line (paths are relative to the working directory).
    monkeypatch.chdir(project)
    bundle = AtlasArtifactBundle(model=demo_model(), metadata=demo_metadata(), architecture_doc=None,
                                 val_inputs_df=pd.read_parquet(project / "data/oov_row300.parquet"))
    with pytest.raises(AtlasInputError) as caught:
        push_to_mlflow(bundle, None, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", work_dir=tmp_path / "work")
    assert str(caught.value) == line
    assert not (tmp_path / "mlflow.db").exists()


def test_export_stage_names_the_failing_row_of_its_sample(project):
    _tensorize(project)
    run(["python", "stages/canonical_outputs.py"], project)
    _tensorize(project, "data.val_inputs=data/oov_row300.parquet")
    line = _fails_with(project, "export")  # canonical outputs from the good data are there
    assert line.startswith("model forward failed on val_inputs rows ") and "(first failing row 300)" in line
    assert "in module 'embedding' (Embedding, " in line and "IndexError: index out of range in self" in line
    assert _report(project, "export")["error"]["message"] == line
    assert not (project / "build/onnx/model.onnx").exists() and not (project / "build/onnx/.attempts").exists()


def test_invariance_stage_names_the_failing_slice_row(project):
    _tensorize(project)
    run(["python", "stages/export.py", "escalation.enabled=false"], project)  # invariance needs an accepted export
    run(["python", "stages/roundtrip.py"], project)  # and the upload gate below reads every report before it
    _tensorize(project, "data.val_inputs=data/oov_row100.parquet")
    line = _fails_with(project, "invariance")
    assert line.startswith("model forward failed on val_inputs rows 64-127 (first failing row 100) in module 'embedding'")
    assert _report(project, "invariance")["error"]["rows"] == "rows 64-127"
    # The report that keeps the error holds no verdicts, and the upload gate must not read it as clean.
    refused = _fails_with(project, "upload", "upload.dry_run=true")
    assert refused.startswith("reports/invariance.json: the stage stopped (model forward failed on val_inputs rows 64-127")
    assert not (project / "build/bundle").exists()


def test_state_dict_with_a_wrong_shaped_tensor(project):
    state = build_model().state_dict()
    state["ctr_head.weight"] = torch.zeros(1, 32)
    torch.save(state, project / "data/narrow_head.pt")
    line = _fails_with(project, "canonical_outputs", "model.weights=data/narrow_head.pt")
    assert line == ("model.weights: data/narrow_head.pt does not match the model built from model.factory and "
                    "model.kwargs: 'ctr_head.weight' is [1, 32] in the file but [1, 64] in the model")


def test_factory_raising_value_error(project):
    line = _fails_with(project, "canonical_outputs", *CODE_DIR, "model.factory=bad_models:build_refusing")
    assert line == ("model.factory: bad_models:build_refusing(**model.kwargs) raised ValueError: "
                    "vocabulary file vocab.txt not found (models/bad_models.py:47)")
    assert _report(project, "canonical_outputs")["error"]["user_frame"] == {
        "file": "models/bad_models.py", "line": 47, "function": "build_refusing",
        "code": 'raise ValueError("vocabulary file vocab.txt not found")'}


def test_module_raising_at_import(project):
    line = _fails_with(project, "canonical_outputs", *CODE_DIR, "model.factory=raises_at_import:build_model")
    assert line == ("model.factory: importing module 'raises_at_import' raised RuntimeError: "
                    "RANKER_FEATURE_STORE is not set (models/raises_at_import.py:5)")


def test_nested_tuple_output(project):
    _tensorize(project)
    line = _fails_with(project, "canonical_outputs", *CODE_DIR, "model.factory=bad_models:build_nested_output")
    assert line == ("model output: forward() returned ((Tensor[256, 1], Tensor[256, 3]), Tensor[256, 1]) but "
                    "metadata.output_names is ['ctr', 'logits']: return one tensor per name (a tensor, a flat tuple "
                    "or a dict)")


def test_float_tokens_for_an_embedding(project):
    frame = pd.read_parquet(project / "data/demo/val_inputs.parquet")
    frame["tokens"] = [np.asarray(v, dtype=np.float32) + 0.5 for v in frame["tokens"]]
    write_frame(frame, project / "data/float_tokens.parquet")
    undeclared = ["~metadata.input_dtypes", "data.val_inputs=data/float_tokens.parquet"]
    _tensorize(project, *undeclared)
    line = _fails_with(project, "canonical_outputs", *undeclared)
    assert line.startswith("model forward failed on val_inputs rows 0-255 (first failing row 0) in module 'embedding'")
    assert "scalar types: Long, Int; but got torch.FloatTensor" in line and "[inputs: tokens float32[256, 12]" in line


def test_forward_after_a_failed_df_shape_dtype_check_says_so(project):
    frame = pd.read_parquet(project / "data/demo/val_inputs.parquet")
    frame["dense"] = [np.asarray(v)[:15] for v in frame["dense"]]
    write_frame(frame, project / "data/narrow_dense.parquet")
    _tensorize(project, "data.val_inputs=data/narrow_dense.parquet")  # the check fails as a verdict, exit 0
    line = _fails_with(project, "canonical_outputs")
    assert "in module 'dense_proj.0' (LayerNorm, " in line
    assert ("; tensorize's df_shape_dtype check had already failed: val_inputs: column 'dense': "
            "cell shape [15] vs metadata [16]") in line


def test_input_names_in_another_order_than_forward(project):
    _tensorize(project, "metadata.input_names=[dense,tokens]")
    line = _fails_with(project, "canonical_outputs", "metadata.input_names=[dense,tokens]")
    assert line == ("metadata.input_names ['dense', 'tokens'] vs MultitaskRanker.forward(tokens, dense): inputs are "
                    "passed by position, so 'dense' would be passed as 'tokens', 'tokens' would be passed as 'dense'; "
                    "list metadata.input_names in forward's order")


# In-process: the pieces behind those lines, on small models.

def test_module_path_and_first_row_deep_inside_the_model():
    x = torch.randn(600, 4)
    x[300, 2] = 1e6
    with pytest.raises(AtlasInputError) as caught:
        run_canonical(bad_models.build_deep(), {"x": x}, ["x"], ["y"], 256, progress=False)
    assert str(caught.value).startswith("model forward failed on val_inputs rows 256-511 (first failing row 300) "
                                        "in module 'blocks.0' (Block, tests/fixture_models/bad_models.py:26): "
                                        "ValueError: activation overflow [inputs: x float32[256, 4]]")


def test_forward_signature_rules():
    model = build_model()
    assert check_forward_signature(model, ["tokens", "dense"]) is None
    # Different names only warn: ONNX input names are the serving contract, not Python's.
    assert "names differ" in check_forward_signature(model, ["ids", "features"])
    with pytest.raises(AtlasInputError, match=r"forward takes 2 positional input\(s\), metadata names 3"):
        check_forward_signature(model, ["tokens", "dense", "extra"])

    class Varargs(torch.nn.Module):
        def forward(self, *inputs):
            return inputs[0]

    assert check_forward_signature(Varargs(), ["b", "a"]) is None  # names unreadable: no comparison


def test_names_that_differ_warn_and_still_run(capsys):
    inputs = {"ids": torch.randint(0, 1000, (4, 12)), "features": torch.randn(4, 16)}
    outputs = run_canonical(build_model(), inputs, ["ids", "features"], ["ctr", "logits"], 256, progress=False)
    assert outputs["ctr"].shape == (4, 1)
    assert "warning: metadata.input_names ['ids', 'features'] vs MultitaskRanker.forward(tokens, dense): names differ" \
        in capsys.readouterr().err


def test_factory_errors_in_process_keep_the_frame():
    with pytest.raises(AtlasInputError) as caught:
        build_from_factory("fixture_models.raises_at_import:build_model", {})
    assert caught.value.details["user_frame"]["file"] == "tests/fixture_models/raises_at_import.py"
    with pytest.raises(AtlasInputError, match="got an unexpected keyword argument 'nope'"):
        build_from_factory("ml_atlas_sdk.demo.ranking:build_model", {"nope": 1})


def test_weights_for_other_kwargs_name_every_resized_tensor(tmp_path):
    torch.save(build_model().state_dict(), tmp_path / "w.pt")
    with pytest.raises(AtlasInputError) as caught:
        load_weights(build_model(vocab_size=500, embed_dim=16), str(tmp_path / "w.pt"))
    assert "'embedding.weight' is [1000, 32] in the file but [500, 16] in the model" in str(caught.value)
    assert str(caught.value).endswith(" and 1 more")


def test_syntax_error_in_model_code_names_its_line(tmp_path, monkeypatch):
    (tmp_path / "typo_model.py").write_text("import torch\n\ndef build_model(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AtlasInputError) as caught:
        build_from_factory("typo_model:build_model", {})
    assert str(caught.value).startswith("model.factory: importing module 'typo_model' raised SyntaxError: ")
    assert str(caught.value).endswith(f"({tmp_path / 'typo_model.py'}:3)")


def test_checkpoint_whose_class_is_gone(tmp_path, monkeypatch):
    (tmp_path / "gone_model.py").write_text("import torch\n\nclass Gone(torch.nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_model

    torch.save(gone_model.Gone(2, 2), tmp_path / "whole.pt")
    (tmp_path / "gone_model.py").unlink()
    monkeypatch.delitem(__import__("sys").modules, "gone_model")
    with pytest.raises(AtlasInputError, match=r"^model.checkpoint: .*whole.pt raised ModuleNotFoundError: No module named 'gone_model'"):
        load_model(ModelSource(checkpoint=str(tmp_path / "whole.pt"), trust_pickle=True))


def test_outputs_whose_shape_depends_on_the_batch():
    class PerBatch(torch.nn.Module):
        def forward(self, x):
            return x @ x.T  # [batch, batch]: only the batch axis may differ between batches

    with pytest.raises(AtlasInputError, match=r"^model output 'y': batches of 4 rows gave shapes \[2, 2\], \[4, 4\]; "):
        run_canonical(PerBatch(), {"x": torch.randn(6, 3)}, ["x"], ["y"], 4, progress=False)


def test_an_output_without_one_entry_per_row_is_refused_not_broadcast():
    class Pooled(torch.nn.Module):
        def forward(self, x):
            return x.sum(0, keepdim=True)  # [1, 3] whatever the batch: would broadcast into the rows

    with pytest.raises(AtlasInputError, match=r"^model output 'y': batches of 4 rows gave shapes \[1, 3\]; .* one entry per row"):
        run_canonical(Pooled(), {"x": torch.randn(6, 3)}, ["x"], ["y"], 4, progress=False)


def test_credentials_in_the_users_exception_are_scrubbed():
    with pytest.raises(AtlasInputError) as caught:
        build_from_factory("fixture_models.bad_models:build_unreachable", {})
    assert "s3cr3t-pass" not in str(caught.value) and "ml:" not in str(caught.value)
    assert "raised ConnectionError: cannot download https://models.example/ranker.pt" in str(caught.value)


def test_a_missing_dependency_names_the_line_that_imports_it(tmp_path, monkeypatch):
    (tmp_path / "needs_dep.py").write_text('"""A model."""\nimport atlas_no_such_dependency\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AtlasInputError) as caught:
        build_from_factory("needs_dep:build_model", {})
    assert str(caught.value) == (f"model.factory: cannot import module 'needs_dep' (No module named "
                                 f"'atlas_no_such_dependency') ({tmp_path / 'needs_dep.py'}:2)")


def test_forward_calling_sys_exit_is_one_line_naming_the_model(project):
    """Issue 25: SystemExit from the user's forward was not caught: the stage ended with no line."""
    _tensorize(project)
    line = _fails_with(project, "canonical_outputs", *CODE_DIR, "model.factory=bad_models:build_exiting")
    assert line.startswith("model forward failed on val_inputs rows 0-255") and "ExitingRanker.forward" in line
    assert "SystemExit: 3" in line and "bad_models.py" in line
    assert _report(project, "canonical_outputs")["status"] == "error"


def test_forward_calling_sys_exit_in_process_is_an_input_error():
    tensors = {"tokens": torch.zeros(4, 12, dtype=torch.int64), "dense": torch.zeros(4, 16)}
    with pytest.raises(AtlasInputError, match=r"ExitingRanker\.forward .*SystemExit: 3"):
        run_canonical(bad_models.build_exiting(), tensors, ["tokens", "dense"], ["ctr", "logits"], 256, progress=False)
