"""architecture.md: the Anthropic API writes it when available, a structural summary otherwise.

Any LLM problem falls back to the structural document with the reason recorded; it never raises.
Answers are cached by a hash of the prompt (and model), so a rerun sends no request.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.metadata import ModelMetadata

REQUEST_TIMEOUT_S = 60.0
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
    reason: str | None = None
    prompt_sha256: str | None = None


def build_architecture_doc(model: torch.nn.Module, onnx_path: Path | None, metadata: ModelMetadata,
                           source: str | None, llm_model: str, cache_dir: str | None) -> ArchDoc:
    if source is None:
        return ArchDoc(None, "none")
    if source != "auto":
        path = Path(source)
        if not path.is_file():
            raise AtlasInputError(f"archdoc.source: {path} does not exist (use auto, a markdown path, or null)")
        return ArchDoc(path.read_text(), "file")
    facts = model_facts(model, onnx_path, metadata)
    prompt = f"{INSTRUCTIONS}\n\n{facts}"
    key = hashlib.sha256(f"{llm_model}\n{prompt}".encode()).hexdigest()
    cached = _cache_path(cache_dir, key)
    if cached.is_file():
        return ArchDoc(cached.read_text(), "cache", None, key)
    answer, reason = _ask_llm(prompt, llm_model)
    if answer is None:
        return ArchDoc(structural_markdown(metadata, facts, reason), "structural", reason, key)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.tmp")
    tmp.write_text(answer)
    tmp.replace(cached)
    return ArchDoc(answer, "llm", None, key)


def _ask_llm(prompt: str, llm_model: str) -> tuple[str | None, str | None]:
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    if not api_key:
        return None, "ANTHROPIC_API_KEY is not set"
    try:
        import anthropic
    except ImportError:
        return None, "the anthropic package is not installed (pip install 'ml-atlas-sdk[architecture]')"
    try:
        client = anthropic.Anthropic(timeout=REQUEST_TIMEOUT_S, max_retries=1)
        message = client.messages.create(model=llm_model, max_tokens=MAX_TOKENS,
                                         messages=[{"role": "user", "content": prompt}])
        text = "".join(block.text for block in message.content if getattr(block, "type", "") == "text").strip()
        text = text + "\n" if text else text
    except Exception as exc:  # any API, network or parsing problem means: fall back
        reason = f"Anthropic API call failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return None, reason.replace(api_key, "***")[:300]
    if not text:
        return None, "Anthropic API returned no text"
    return text, None


def model_facts(model: torch.nn.Module, onnx_path: Path | None, metadata: ModelMetadata) -> str:
    """Everything the document is written from, as markdown: repr, metadata, I/O, ops, parameters."""
    io_rows = [f"| {kind} | {name} | {shape} | {dtype} | {metadata.axes_of(name)} |"
               for kind, names, shapes in (("input", metadata.input_names, metadata.input_shapes),
                                           ("output", metadata.output_names, metadata.output_shape))
               for name in names
               for shape, dtype in [(shapes[name], metadata.dtype_of.get(name, "float32" if kind == "output" else "-"))]]
    ops = op_histogram(onnx_path)
    params = parameter_counts(model)
    meta_json = json.dumps(metadata.model_dump(mode="json", exclude={"torch_version"}), indent=2, sort_keys=True)
    return "\n".join([
        f"## Model `{metadata.model_name}`",
        "### Model repr", "```", repr(model), "```",
        "### Metadata", "```json", meta_json, "```",
        "### Inputs and outputs", "| kind | name | shape | dtype | dynamic axes |", "| --- | --- | --- | --- | --- |", *io_rows,
        "### ONNX op histogram", "| op | count |", "| --- | --- |", *[f"| {op} | {n} |" for op, n in ops.items()],
        "### Parameters", "| module | parameters |", "| --- | --- |",
        *[f"| {name} | {count:,} |" for name, count in params.items()],
    ])


def structural_markdown(metadata: ModelMetadata, facts: str, reason: str | None) -> str:
    return (f"# Architecture: {metadata.model_name}\n\n"
            f"_Structural description generated from the model itself ({reason or 'no LLM requested'})._\n\n{facts}\n")


def op_histogram(onnx_path: Path | None) -> dict[str, int]:
    if onnx_path is None or not Path(onnx_path).is_file():
        return {}
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return dict(sorted(collections.Counter(n.op_type for n in graph.node).items(), key=lambda kv: (-kv[1], kv[0])))


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    counts = {"(total)": sum(p.numel() for p in model.parameters()),
              "(trainable)": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for name, child in model.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    return counts


def _cache_path(cache_dir: str | None, key: str) -> Path:
    if cache_dir:
        base = Path(cache_dir).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ml-atlas-sdk" / "architecture"
    return base / f"{key}.md"
