"""archdoc against a fake Anthropic server on 127.0.0.1, through the real anthropic client."""
from __future__ import annotations

from pathlib import Path

import pytest

from fake_anthropic import FakeAnthropic
from ml_atlas_sdk.archdoc import build_architecture_doc
from ml_atlas_sdk.export.attempt import export_onnx
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.tensors import load_tensors
from sdk_helpers import demo_metadata, demo_model

KEY = "sk-ant-test-SECRET-0123456789"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    import torch
    sample = {"tokens": torch.randint(0, 1000, (4, 12)), "dense": torch.randn(4, 16)}
    export_onnx(demo_model(), sample, demo_metadata(), ExportSettings(), path)
    return path


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return tmp_path


def _doc(onnx_path, cache_dir=None):
    return build_architecture_doc(demo_model(), onnx_path, demo_metadata(), "auto", "claude-test", cache_dir)


def _all_written_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_llm_answer_is_used_then_cached(env, onnx_path, monkeypatch):
    with FakeAnthropic("# Ranker\nTwo towers.") as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        doc = _doc(onnx_path)
        assert (doc.origin, doc.markdown) == ("llm", "# Ranker\nTwo towers.\n")
        (request,) = fake.requests
        prompt = request["body"]["messages"][0]["content"]
        assert "MultitaskRanker(" in prompt                       # the model's repr
        assert "| input | tokens | [-1, -1] | int64 |" in prompt     # the I/O table
        assert "| Gemm |" in prompt or "| MatMul |" in prompt       # the ONNX op histogram
        assert "| (total) |" in prompt and "| embedding |" in prompt  # parameter counts
        assert request["body"]["model"] == "claude-test"

        again = _doc(onnx_path)
        assert (again.origin, again.markdown) == ("cache", doc.markdown)
        assert len(fake.requests) == 1                             # a cache hit sends no request
    cache_files = list((env / "xdg" / "ml-atlas-sdk" / "architecture").glob("*.md"))
    assert [p.stem for p in cache_files] == [doc.prompt_sha256]
    assert KEY not in _all_written_text(env)


def test_http_500_falls_back_to_structural_with_the_reason(env, onnx_path, monkeypatch):
    with FakeAnthropic(status=500) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        doc = _doc(onnx_path, cache_dir=str(env / "cache"))
    assert doc.origin == "structural" and "500" in doc.reason
    assert doc.markdown.startswith("# Architecture: demo_ranking") and "| Gemm |" in doc.markdown
    assert KEY not in doc.reason and KEY not in doc.markdown
    assert not (env / "cache").exists()  # failures are not cached


def test_no_key_path_and_null_sources(env, onnx_path, monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    doc = _doc(onnx_path)
    assert doc.origin == "structural" and "ANTHROPIC_API_KEY is not set" in doc.reason
    written = tmp_path / "mine.md"
    written.write_text("# hand written\n")
    assert build_architecture_doc(demo_model(), onnx_path, demo_metadata(), str(written), "m", None).markdown == "# hand written\n"
    none = build_architecture_doc(demo_model(), onnx_path, demo_metadata(), None, "m", None)
    assert (none.origin, none.markdown) == ("none", None)


def test_archdoc_stage_with_the_fake_api_writes_no_key_anywhere(project, tmp_path):
    from conftest import project_env, run

    with FakeAnthropic("# From the fake API\n") as fake:
        env = project_env({"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.url, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
        result = run(["dvc", "repro", "archdoc"], project, env=env)
        assert len(fake.requests) == 1
    assert (project / "build/archdoc/architecture.md").read_text() == "# From the fake API\n"
    assert '"origin": "llm"' in (project / "reports/archdoc.json").read_text()
    assert KEY not in result.stdout + result.stderr
    assert KEY not in _all_written_text(project) and KEY not in _all_written_text(tmp_path / "xdg")
