"""Build the user's nn.Module from settings, and run it the one canonical way (FP32, CPU, eval)."""
from __future__ import annotations

import importlib
import pickle
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.settings import ModelSource  # noqa: F401 (the `model:` section; re-exported)


def load_model(source: ModelSource) -> torch.nn.Module:
    for code_dir in source.code_dirs:
        if not Path(code_dir).is_dir():
            raise AtlasInputError(f"model.code_dirs: {code_dir} is not a directory")
        if str(Path(code_dir).resolve()) not in sys.path:
            sys.path.insert(0, str(Path(code_dir).resolve()))
    if source.checkpoint:
        return _load_checkpoint(source)
    if not source.factory:
        raise AtlasInputError("model: set model.factory (with model.weights) or model.checkpoint")
    model = build_from_factory(source.factory, dict(source.kwargs))
    if source.weights:
        load_weights(model, source.weights)
    return model


def build_from_factory(factory: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise AtlasInputError(f"model.factory: {factory!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AtlasInputError(f"model.factory: cannot import module {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AtlasInputError(f"model.factory: module {module_name!r} has no callable {attr!r}")
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise AtlasInputError(f"model.factory: {factory}(**model.kwargs) failed: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise AtlasInputError(f"model.factory: {factory} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: torch.nn.Module, weights: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise AtlasInputError(f"model.weights: {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise AtlasInputError(
            f"model.weights: {path} holds pickled objects that torch.load(weights_only=True) refuses; "
            "save model.state_dict() instead, or use model.checkpoint with model.trust_pickle: true"
        ) from None
    except Exception as exc:
        raise AtlasInputError(f"model.weights: {path} cannot be read ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, Mapping):
        raise AtlasInputError(f"model.weights: {path} holds a {type(state).__name__}, not a state_dict")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise AtlasInputError(
            f"model.weights: {path} does not match the model: missing keys {_short(result.missing_keys)}, "
            f"unexpected keys {_short(result.unexpected_keys)}"
        )


def _load_checkpoint(source: ModelSource) -> torch.nn.Module:
    path = Path(source.checkpoint)
    if not path.is_file():
        raise AtlasInputError(f"model.checkpoint: {path} does not exist")
    if not source.trust_pickle:
        raise AtlasInputError(
            f"model.checkpoint: {path} is a pickled module and pickles run code when loaded; "
            "set model.trust_pickle: true only if you trust its author, or use model.factory + model.weights"
        )
    model = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise AtlasInputError(f"model.checkpoint: {path} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


def canonical_model(model: torch.nn.Module) -> torch.nn.Module:
    """The reference form of the model: eval mode, CPU, float32 (no FP16 or GPU references)."""
    return model.eval().cpu().float()


def outputs_by_name(raw: Any, output_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Map whatever forward() returned (tensor, tuple, dict) onto the metadata's output names."""
    if isinstance(raw, torch.Tensor):
        raw = (raw,)
    if isinstance(raw, Mapping):
        missing = [n for n in output_names if n not in raw]
        if missing:
            raise AtlasInputError(f"model output: forward() returned keys {list(raw)}, missing {missing}")
        return {n: raw[n] for n in output_names}
    raw = list(raw)
    if len(raw) != len(output_names):
        raise AtlasInputError(
            f"model output: forward() returned {len(raw)} tensor(s) but metadata.output_names has {list(output_names)}"
        )
    return dict(zip(output_names, raw))


def run_canonical(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    batch_size: int,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Batched FP32-CPU forward pass under no_grad; returns CPU contiguous float32 tensors."""
    model = canonical_model(model)
    rows = next(iter(inputs.values())).shape[0]
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in output_names}
    starts = range(0, rows, batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="canonical outputs", unit="batch", disable=None if progress else True, leave=False):
            batch = [inputs[n][start : start + batch_size] for n in input_names]
            out = outputs_by_name(model(*batch), output_names)
            for n in output_names:
                chunks[n].append(out[n].detach().cpu())
    return {n: _as_float32(torch.cat(chunks[n])) for n in output_names}


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return (t.float() if t.is_floating_point() else t).contiguous()


def _short(keys: Sequence[str], limit: int = 5) -> list[str] | str:
    keys = list(keys)
    return keys if len(keys) <= limit else f"{keys[:limit]} and {len(keys) - limit} more"
