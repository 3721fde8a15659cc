"""Build the user's nn.Module from settings, and run it the one canonical way (FP32, CPU, eval)."""
from __future__ import annotations

import importlib
import inspect
import pickle
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ml_atlas_sdk import mapped_pages
from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.secrets import first_line
from ml_atlas_sdk.settings import ModelSource  # noqa: F401 (the `model:` section; re-exported)
from ml_atlas_sdk.user_errors import at, code_failure, forward_failure, user_frame


def as_torch(tensors: Mapping[str, Any] | None) -> dict[str, torch.Tensor] | None:
    """Tensors for the model from the arrays the data side holds (shared memory where writable;
    a read-only file mapping is copied, since a model may write to its inputs)."""
    if tensors is None:
        return None
    return {name: value if isinstance(value, torch.Tensor) else
            torch.from_numpy(value if value.flags.writeable else np.array(value)) for name, value in tensors.items()}


def model_summary(model: torch.nn.Module) -> dict[str, Any]:
    """What architecture.md is written from: the model's repr and parameter counts (total,
    trainable, per top-level child)."""
    counts = {"(total)": sum(p.numel() for p in model.parameters()),
              "(trainable)": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for name, child in model.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    return {"repr": repr(model), "parameters": counts}


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
    except ImportError as exc:  # the module, or one it imports (then the line that does is named)
        raise AtlasInputError(f"model.factory: cannot import module {module_name!r} ({first_line(exc)})"
                              f"{at(user_frame(exc.__traceback__))}") from None
    except (Exception, SystemExit) as exc:  # the module's own top-level code raised (SyntaxError, sys.exit included)
        raise code_failure(f"model.factory: importing module {module_name!r}", exc) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AtlasInputError(f"model.factory: module {module_name!r} has no callable {attr!r}")
    try:
        model = fn(**kwargs)
    except (Exception, SystemExit) as exc:  # anything the user's factory raises (or exits) is a model that cannot be built
        raise code_failure(f"model.factory: {factory}(**model.kwargs)", exc) from None
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
        raise AtlasInputError(f"model.weights: {path} cannot be read ({first_line(exc)})") from None
    if not isinstance(state, Mapping):
        raise AtlasInputError(f"model.weights: {path} holds a {type(state).__name__}, not a state_dict")
    own = model.state_dict()
    resized = [f"{k!r} is {list(v.shape)} in the file but {list(own[k].shape)} in the model"
               for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if resized:
        more = f" and {len(resized) - 3} more" if len(resized) > 3 else ""
        raise AtlasInputError(f"model.weights: {path} does not match the model built from model.factory and "
                              f"model.kwargs: {'; '.join(resized[:3])}{more}")
    try:
        result = model.load_state_dict(state, strict=False)
    except Exception as exc:  # a custom _load_from_state_dict, or a non-tensor value
        raise code_failure(f"model.weights: loading {path} into the model", exc) from None
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
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling runs the user's classes' code, and may not find them
        raise code_failure(f"model.checkpoint: loading {path}", exc) from None
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
        named = {n: raw[n] for n in output_names}
    elif isinstance(raw, (tuple, list)) and len(raw) == len(output_names):
        named = dict(zip(output_names, raw))
    else:
        named = {}
    if not named or not all(isinstance(t, torch.Tensor) for t in named.values()):
        # Each ONNX output is one tensor: nested tuples, None or Python numbers have no name to go to.
        raise AtlasInputError(f"model output: forward() returned {_structure(raw)} but metadata.output_names is "
                              f"{list(output_names)}: return one tensor per name (a tensor, a flat tuple or a dict)")
    return named


def forward_rows(model: torch.nn.Module, args: Sequence[torch.Tensor], input_names: Sequence[str],
                 output_names: Sequence[str], rows: Sequence[int], subject: str = "val_inputs") -> dict[str, torch.Tensor]:
    """model(*args) on rows `rows` of `subject`, its outputs by name; what the user's code raises
    becomes one line naming the rows, the module and the user's last frame."""
    try:
        raw = model(*args)
    except (Exception, SystemExit) as exc:  # any error from the user's forward (sys.exit too) is theirs, named precisely
        raise forward_failure(exc, model, args, input_names, rows, subject) from None
    return outputs_by_name(raw, output_names)


def check_forward(model: torch.nn.Module, sample: Mapping[str, torch.Tensor], metadata: Any, rows: Sequence[int]) -> None:
    """One canonical forward on the rows an exporter is about to trace, so a model that raises is
    reported as the user's error (rows, module, frame) rather than as every export attempt failing."""
    with torch.no_grad():
        forward_rows(canonical_model(model), [sample[n] for n in metadata.input_names], metadata.input_names,
                     metadata.output_names, rows)


def eager_reference(model: torch.nn.Module, metadata: Any):
    """The canonical model as a function of numpy feeds, for probes at other sizes: its outputs by
    name as float32 (or their own integer dtype) arrays."""
    model = canonical_model(model)

    def forward(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = outputs_by_name(model(*[torch.from_numpy(np.array(feed[n])) for n in metadata.input_names]),
                                  metadata.output_names)
        return {n: (t.float() if t.is_floating_point() else t).detach().cpu().numpy() for n, t in out.items()}

    return forward


def check_forward_signature(model: torch.nn.Module, input_names: Sequence[str]) -> str | None:
    """Compare metadata.input_names with forward()'s positional parameters, when they can be read.

    Inputs are passed by position, so a name of forward's at another position means rows go to the
    wrong parameter (an error), and a count forward cannot take fails anyway (an error, said
    clearly). Names that simply differ are only a warning (returned): ONNX input names are the
    serving contract and may legitimately differ from Python's (`x` vs `pixel_values`).
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names, given = [p.name for p in positional], list(input_names)
    required = [p.name for p in positional if p.default is p.empty]
    both = f"metadata.input_names {given} vs {type(model).__name__}.forward({', '.join(names)})"
    if len(given) > len(names) or len(given) < len(required):
        takes = f"{len(required)}-{len(names)}" if len(required) < len(names) else str(len(names))
        raise AtlasInputError(f"{both}: forward takes {takes} positional input(s), metadata names {len(given)}")
    bound = names[: len(given)]
    misplaced = [f"{n!r} would be passed as {b!r}" for n, b in zip(given, bound) if n != b and n in names]
    if misplaced:
        raise AtlasInputError(f"{both}: inputs are passed by position, so {', '.join(misplaced)}; "
                              "list metadata.input_names in forward's order")
    if given != bound:
        return f"{both}: names differ; inputs are passed by position, so make sure the order matches"
    return None


def run_canonical(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    batch_size: int,
    progress: bool = True,
    subject: str = "val_inputs",
) -> dict[str, torch.Tensor]:
    """Batched FP32-CPU forward pass under no_grad; returns CPU contiguous float32 tensors."""
    model = canonical_model(model)
    warning = check_forward_signature(model, input_names)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    rows = next(iter(inputs.values())).shape[0]
    # One array per output, filled batch by batch: the outputs are held once (not chunks plus
    # their concatenation), float outputs as float32 from the start.
    outputs: dict[str, torch.Tensor] = {}
    first_shape: dict[str, list[int]] = {}
    starts = range(0, rows, batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="canonical outputs", unit="batch", disable=None if progress else True, leave=False):
            stop = min(start + batch_size, rows)
            batch = [inputs[n][start:stop] for n in input_names]
            out = forward_rows(model, batch, input_names, output_names, range(start, stop), subject)
            for n in output_names:
                value = out[n].detach().cpu()
                if n not in outputs:
                    first_shape[n] = list(value.shape)
                    dtype = torch.float32 if value.is_floating_point() else value.dtype
                    outputs[n] = torch.empty((rows, *value.shape[1:]), dtype=dtype)
                if value.shape[1:] != outputs[n].shape[1:] or value.shape[:1] != (stop - start,):
                    shapes = sorted({str(first_shape[n]), str(list(value.shape))})
                    raise AtlasInputError(
                        f"model output {n!r}: batches of {batch_size} rows gave shapes {', '.join(shapes)}; only the "
                        "batch axis may differ between batches, and it must come first with one entry per row")
                outputs[n][start:stop] = value
            mapped_pages.release(batch)
    return outputs


def _structure(raw: Any) -> str:
    if isinstance(raw, torch.Tensor):
        return f"Tensor{list(raw.shape)}"
    if isinstance(raw, (tuple, list)):
        inner = ", ".join(_structure(v) for v in raw)
        return f"({inner}{',' if len(raw) == 1 else ''})" if isinstance(raw, tuple) else f"[{inner}]"
    if isinstance(raw, Mapping):
        return "{" + ", ".join(f"{k!r}: {_structure(v)}" for k, v in raw.items()) + "}"
    return type(raw).__name__


def _short(keys: Sequence[str], limit: int = 5) -> list[str] | str:
    keys = list(keys)
    return keys if len(keys) <= limit else f"{keys[:limit]} and {len(keys) - limit} more"
