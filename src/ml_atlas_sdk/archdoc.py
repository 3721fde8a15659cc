"""architecture.md: the Anthropic API writes it when available, a structural summary otherwise.

Any LLM problem falls back to the structural document with the reason recorded; it never raises.
Answers are cached by a hash of the prompt (and model), so a rerun sends no request.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.reports import write_text_atomic
from ml_atlas_sdk.secrets import first_line, scrub

# Bounded so a dead or hanging server costs at most ~2 minutes of a pipeline run, not forever.
REQUEST_TIMEOUT_S = 60.0
MAX_RETRIES = 1
MAX_TOKENS = 2048
INSTRUCTIONS = (
    "You document neural network models for engineers who deploy them with TensorRT/Triton. "
    "Write concise markdown: a one-paragraph overview, the data flow from inputs to outputs, notable "
    "layers and ops, and deployment notes (dynamic axes, dtypes, ops that may need attention)."
)


@dataclass(frozen=True)
class ArchDoc:
    markdown: str | None
    origin: str  # llm | cache | structural | file | none
    reason: str | None = None  # why the structural fallback was used
    prompt_sha256: str | None = None


def build_architecture_doc(summary: Mapping[str, Any], onnx_path: Path | None, metadata: ModelMetadata,
                           source: str | Path | None, llm_model: str, cache_dir: str | None) -> ArchDoc:
    """`source`: "auto" (LLM when available, else structural), a markdown path, or None (no document).
    `summary` is models.model_summary(model): the document needs the model's repr and parameter
    counts, not the model, so the archdoc stage runs without torch."""
    if source is None:
        return ArchDoc(None, "none")
    if str(source) != "auto":
        path = Path(source).expanduser()
        if not path.is_file():
            raise AtlasInputError(f"archdoc.source: {path} is not a file (use auto, a markdown path, or null)")
        return ArchDoc(path.read_text(), "file")
    facts = model_facts(summary, onnx_path, metadata)
    prompt = f"{INSTRUCTIONS}\n\n{facts}"
    key = hashlib.sha256(f"{llm_model}\n{prompt}".encode()).hexdigest()
    cached = _cache_path(cache_dir, key)
    hit = _read_cache(cached)
    if hit is not None:
        return ArchDoc(hit, "cache", None, key)
    answer, reason = _ask_llm(prompt, llm_model)
    if answer is None:
        return ArchDoc(structural_markdown(metadata, facts, reason), "structural", reason, key)
    _write_cache(cached, answer)
    return ArchDoc(answer, "llm", None, key)


def _ask_llm(prompt: str, llm_model: str) -> tuple[str | None, str | None]:
    """(answer, None) or (None, reason); the reason never holds the API key."""
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    if not api_key:
        return None, "ANTHROPIC_API_KEY is not set"
    try:
        import anthropic
    except ImportError:
        return None, "the anthropic package is not installed (pip install 'ml-atlas-sdk[architecture]')"
    try:
        client = anthropic.Anthropic(timeout=REQUEST_TIMEOUT_S, max_retries=MAX_RETRIES)
        message = client.messages.create(model=llm_model, max_tokens=MAX_TOKENS,
                                         messages=[{"role": "user", "content": prompt}])
        text = "".join(block.text for block in message.content if getattr(block, "type", "") == "text")
    except Exception as exc:  # any API, network or parsing problem means: fall back
        return None, f"Anthropic API call failed: {type(exc).__name__}: {first_line(exc, api_key)}"[:300]
    if not text.strip():
        return None, "Anthropic API returned no text"
    # A proxy or a model could echo request headers; the key must not reach the cache or the bundle.
    return scrub(text.strip(), api_key) + "\n", None  # a markdown file ends with a newline


def model_facts(summary: Mapping[str, Any], onnx_path: Path | None, metadata: ModelMetadata) -> str:
    """Everything the document is written from, as markdown: repr, metadata, I/O, ops, parameters."""
    graph = _onnx_graph(onnx_path)
    dtypes = {**metadata.dtype_of, **_graph_dtypes(graph)}  # the exported graph knows output dtypes too
    io_rows = [f"| {kind} | {name} | {shapes[name]} | {dtypes.get(name, '-')} | {metadata.axes_of(name)} |"
               for kind, names, shapes in (("input", metadata.input_names, metadata.input_shapes),
                                           ("output", metadata.output_names, metadata.output_shape))
               for name in names]
    ops = op_histogram(graph)
    params = summary["parameters"]
    # torch_version is left out so upgrading torch alone does not invalidate every cached answer.
    meta_json = json.dumps(metadata.model_dump(mode="json", exclude={"torch_version"}), indent=2, sort_keys=True)
    return "\n".join([
        f"## Model `{metadata.model_name}`",
        "### Model repr", "```", summary["repr"], "```",
        "### Metadata", "```json", meta_json, "```",
        "### Inputs and outputs", "| kind | name | shape | dtype | dynamic axes |", "| --- | --- | --- | --- | --- |", *io_rows,
        "### ONNX op histogram", "| op | count |", "| --- | --- |",
        *([f"| {op} | {n} |" for op, n in ops.items()] or ["| (no ONNX graph) | 0 |"]),
        "### Parameters", "| module | parameters |", "| --- | --- |",
        *[f"| {name} | {count:,} |" for name, count in params.items()],
    ])


def structural_markdown(metadata: ModelMetadata, facts: str, reason: str | None) -> str:
    return (f"# Architecture: {metadata.model_name}\n\n"
            f"_Structural description generated from the model itself, not by an LLM: {reason or 'no LLM requested'}._\n\n"
            f"{facts}\n")


def op_histogram(graph: onnx.GraphProto | None) -> dict[str, int]:
    """Node op_type counts of the top-level graph, most frequent first."""
    if graph is None:
        return {}
    counts = collections.Counter(n.op_type for n in graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _onnx_graph(onnx_path: Path | None) -> onnx.GraphProto | None:
    if onnx_path is None or not Path(onnx_path).is_file():
        return None
    # Weights are not needed for ops and dtypes; skipping external data keeps multi-GB models cheap.
    return onnx.load(str(onnx_path), load_external_data=False).graph


def _graph_dtypes(graph: onnx.GraphProto | None) -> dict[str, str]:
    out = {}
    for value in [*graph.input, *graph.output] if graph is not None else []:
        elem = value.type.tensor_type.elem_type
        if elem:
            out[value.name] = str(onnx.helper.tensor_dtype_to_np_dtype(elem))
    return out


def _cache_path(cache_dir: str | None, key: str) -> Path:
    if cache_dir:
        base = Path(cache_dir).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ml-atlas-sdk" / "architecture"
    return base / f"{key}.md"


def _read_cache(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:  # missing or unreadable: a miss, not an error
        return None
    return text or None


def _write_cache(path: Path, text: str) -> None:
    """Atomic, so parallel runs never read a half-written answer."""
    try:
        write_text_atomic(path, text)
    except OSError:  # a read-only cache only costs a request next time; the answer is still good
        pass
