"""One torch.onnx.export call with given settings, its noise captured."""
from __future__ import annotations

from pathlib import Path

import onnx
import torch

from ml_atlas_sdk.export.capture import CapturedText, captured_output, plain
from ml_atlas_sdk.export.settings import ExportSettings
from ml_atlas_sdk.metadata import ModelMetadata
from ml_atlas_sdk.models import canonical_model

TWO_GB = 2 * 1024**3
# The dynamo exporter builds opset-18 graphs; converting one down to 17 and then optimizing it
# leaves opset-18 nodes (Split with num_outputs) in an opset-17 model that ORT refuses. It exports
# at 18 at least; the bundle records the model's real opset.
DYNAMO_MIN_OPSET = 18


class ExportFailed(Exception):
    def __init__(self, summary: str, log: str):
        super().__init__(summary)
        self.summary = summary
        self.log = log


def export_onnx(
    model: torch.nn.Module,
    sample: dict[str, torch.Tensor],
    metadata: ModelMetadata,
    settings: ExportSettings,
    path: Path,
) -> CapturedText:
    """Export `model` traced on `sample` to `path`; raises ExportFailed with the captured log."""
    model = canonical_model(model)
    args = tuple(sample[n] for n in metadata.input_names)
    dynamic_axes = {n: metadata.axes_of(n) for n in [*metadata.input_names, *metadata.output_names]}
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        input_names=list(metadata.input_names),
        output_names=list(metadata.output_names),
        opset_version=max(settings.opset, DYNAMO_MIN_OPSET) if settings.dynamo else settings.opset,
        dynamic_axes=dynamic_axes,
        dynamo=settings.dynamo,
    )
    if settings.dynamo:
        # The dynamo exporter folds constants in its optimize pass; it must write external data past 2 GB.
        kwargs.update(optimize=settings.do_constant_folding, external_data=_parameter_bytes(model) > TWO_GB)
    else:
        kwargs.update(do_constant_folding=settings.do_constant_folding)
    with captured_output() as log:
        try:
            with torch.no_grad():
                torch.onnx.export(model, args, str(path), **kwargs)
        except Exception as exc:  # exporters raise many types; all mean "this attempt failed"
            error = exc
        else:
            error = None
    if error is not None:
        raise ExportFailed(_summary(error), plain(f"{log.full}\n{type(error).__name__}: {error}").strip())
    place_weights(path, settings.external_data_above_mb * 1024**2)
    return log


def place_weights(path: Path, limit_bytes: float) -> None:
    """One weight layout whatever the exporter wrote: inline up to `limit_bytes`, else every tensor
    in `<name>.data` beside the graph, the layout the bundle, ORT and atlas read. (Past 2 GB the
    TorchScript exporter writes one file per tensor, the dynamo exporter its own name.) `path`'s
    folder holds only this export."""
    written = [p for p in path.parent.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in written)
    extra = [p for p in written if p != path]
    if size <= limit_bytes and not extra:
        return
    model = onnx.load(str(path))  # pulls every external tensor in
    for stale in extra:
        stale.unlink()
    if size <= limit_bytes:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=0)


def _summary(exc: Exception) -> str:
    lines = [ln.strip() for ln in plain(str(exc)).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
