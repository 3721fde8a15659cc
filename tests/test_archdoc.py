"""archdoc against a fake Anthropic server on 127.0.0.1, through the real anthropic client."""
from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch

from fake_anthropic import FakeAnthropic
from ml_atlas_sdk.archdoc import build_architecture_doc
from ml_atlas_sdk.models import model_summary
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.export.attempt import export_onnx
from ml_atlas_sdk.export.settings import ExportSettings
from sdk_helpers import demo_metadata, demo_model
from servers import free_port

KEY = "sk-ant-test-SECRET-0123456789"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    sample = {"tokens": torch.randint(0, 1000, (4, 12)), "dense": torch.randn(4, 16)}
    export_onnx(demo_model(), sample, demo_metadata(), ExportSettings(), path)
    return path


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    # Nothing listens here, so a test that forgets to start the fake can never reach the real API.
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{free_port()}")
    return tmp_path


def _doc(onnx_path, cache_dir=None, llm_model="claude-test"):
    return build_architecture_doc(model_summary(demo_model()), onnx_path, demo_metadata(), "auto", llm_model, cache_dir)


def _all_written_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def _expected_facts(onnx_path: Path) -> list[str]:
    """Rows the prompt and the structural document must hold, computed independently of archdoc."""
    model = demo_model()
    ops = collections.Counter(n.op_type for n in onnx.load(str(onnx_path)).graph.node)
    return [
        repr(model),
        '"model_name": "demo_ranking"',                                   # the metadata JSON
        "| input | tokens | [-1, -1] | int64 | {0: 'batch', 1: 'seq_len'} |",  # the I/O table
        "| output | logits | [-1, 3] | float32 | {0: 'batch'} |",
        *[f"| {op} | {n} |" for op, n in ops.items()],                   # the op histogram
        f"| (total) | {sum(p.numel() for p in model.parameters()):,} |",  # parameter counts
        f"| (trainable) | {sum(p.numel() for p in model.parameters()):,} |",
        f"| trunk | {sum(p.numel() for p in model.trunk.parameters()):,} |",
    ]


def test_llm_answer_is_used_then_cached(env, onnx_path, monkeypatch):
    with FakeAnthropic("# Ranker\nTwo towers.") as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        doc = _doc(onnx_path)
        assert (doc.origin, doc.markdown, doc.reason) == ("llm", "# Ranker\nTwo towers.\n", None)
        (request,) = fake.requests
        assert request["path"] == "/v1/messages" and request["body"]["model"] == "claude-test"
        prompt = request["body"]["messages"][0]["content"]
        missing = [row for row in _expected_facts(onnx_path) if row not in prompt]
        assert not missing, f"prompt lacks {missing}"

        again = _doc(onnx_path)
        assert (again.origin, again.markdown, again.prompt_sha256) == ("cache", doc.markdown, doc.prompt_sha256)
        assert len(fake.requests) == 1                             # a cache hit sends no request
        other = _doc(onnx_path, llm_model="claude-other")
        assert other.origin == "llm" and len(fake.requests) == 2  # the cache key includes the LLM model
    cache_dir = env / "xdg" / "ml-atlas-sdk" / "architecture"
    # One file per answer, named by its hash; no temp files are left behind by the atomic write.
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([f"{doc.prompt_sha256}.md", f"{other.prompt_sha256}.md"])
    assert (cache_dir / f"{doc.prompt_sha256}.md").read_text() == doc.markdown
    assert KEY not in _all_written_text(env)


def test_a_key_echoed_by_the_server_is_never_written(env, onnx_path, monkeypatch):
    with FakeAnthropic(f"# Doc\nheaders said x-api-key: {KEY}") as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        doc = _doc(onnx_path, cache_dir=str(env / "cache"))
    assert doc.origin == "llm" and KEY not in doc.markdown and "x-api-key: ***" in doc.markdown
    assert list((env / "cache").glob("*.md")) and KEY not in _all_written_text(env / "cache")


def test_http_500_falls_back_to_structural_with_the_reason(env, onnx_path, monkeypatch):
    with FakeAnthropic(status=500, error=f"upstream rejected key {KEY}") as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        doc = _doc(onnx_path, cache_dir=str(env / "cache"))
        assert 1 <= len(fake.requests) <= 2                        # retries are bounded
    assert doc.origin == "structural" and "500" in doc.reason
    assert KEY not in doc.reason and KEY not in doc.markdown
    assert doc.markdown.startswith("# Architecture: demo_ranking\n")
    assert f"not by an LLM: {doc.reason}" in doc.markdown           # says why it is structural
    assert "```\nMultitaskRanker(" in doc.markdown                  # the repr, fenced
    missing = [row for row in _expected_facts(onnx_path) if row not in doc.markdown]
    assert not missing, f"structural markdown lacks {missing}"
    assert not (env / "cache").exists()                             # failures are not cached


def test_dead_server_falls_back_quickly(env, onnx_path):
    started = time.monotonic()
    doc = _doc(onnx_path)  # the env fixture points the client at a port nobody listens on
    assert doc.origin == "structural" and "APIConnectionError" in doc.reason
    assert time.monotonic() - started < 30


def test_no_key_or_no_package_gives_structural_with_the_reason(env, onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "anthropic", None)  # makes `import anthropic` raise ImportError
    doc = _doc(onnx_path)
    assert doc.origin == "structural" and "anthropic package is not installed" in doc.reason
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    doc = _doc(onnx_path)
    assert doc.origin == "structural" and doc.reason == "ANTHROPIC_API_KEY is not set"
    assert "ANTHROPIC_API_KEY is not set" in doc.markdown


def test_default_cache_dir_is_home_cache_without_xdg(env, onnx_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(env / "home"))
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        doc = _doc(onnx_path)
    assert (env / "home/.cache/ml-atlas-sdk/architecture" / f"{doc.prompt_sha256}.md").read_text() == doc.markdown


def test_path_and_null_sources(onnx_path, tmp_path):
    written = tmp_path / "mine.md"
    written.write_text("# hand written\n")
    doc = build_architecture_doc(model_summary(demo_model()), onnx_path, demo_metadata(), str(written), "m", None)
    assert (doc.origin, doc.markdown) == ("file", "# hand written\n")
    with pytest.raises(AtlasInputError, match=r"^archdoc\.source: .*nope\.md"):
        build_architecture_doc(model_summary(demo_model()), onnx_path, demo_metadata(), str(tmp_path / "nope.md"), "m", None)
    none = build_architecture_doc(model_summary(demo_model()), onnx_path, demo_metadata(), None, "m", None)
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
