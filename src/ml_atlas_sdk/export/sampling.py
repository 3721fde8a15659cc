"""Choose the rows the exporter traces with: the ones that differ most, never fewer than 2."""
from __future__ import annotations

import torch

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.tensors import slice_rows

_MAX_FEATURES = 512  # random projection above this keeps the distance computation small
# Rows the sample is drawn from: a seeded random subset above this, so the sampler's memory and
# time stay flat as the validation set grows (all 1M rows' float64 features peaked at 0.9 GB).
MAX_CANDIDATES = 20_000


def select_export_rows(inputs: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
    """Greedy farthest-point sample of `batch_size` rows over standardised, flattened inputs.

    Tracing on the first rows alone can bake in what they happen to share (padding, a constant
    feature); far-apart rows exercise more of the model. Above MAX_CANDIDATES rows the sample is
    drawn from that many rows picked at random (seeded, so reruns trace the same rows). Returns
    sorted row indices.
    """
    rows = next(iter(inputs.values())).shape[0]
    if rows < 2:
        raise AtlasInputError(f"data.val_inputs: {rows} row(s); the export needs at least 2 so the batch axis stays dynamic")
    k = max(2, min(batch_size, rows))
    if k == rows:
        return torch.arange(rows)
    candidates = torch.arange(rows)
    if rows > MAX_CANDIDATES:
        candidates = torch.randperm(rows, generator=torch.Generator().manual_seed(0))[:MAX_CANDIDATES].sort().values
    features = _row_features(slice_rows(inputs, candidates), len(candidates))
    centre = features.mean(dim=0, keepdim=True)
    first = int(torch.cdist(features, centre).squeeze(1).argmax())
    chosen = [first]
    nearest = torch.cdist(features, features[first : first + 1]).squeeze(1)
    for _ in range(k - 1):
        nearest[chosen] = -1.0
        nxt = int(nearest.argmax())
        chosen.append(nxt)
        nearest = torch.minimum(nearest, torch.cdist(features, features[nxt : nxt + 1]).squeeze(1))
    return candidates[sorted(chosen)]


def _row_features(inputs: dict[str, torch.Tensor], rows: int) -> torch.Tensor:
    parts = []
    for tensor in inputs.values():
        flat = tensor.reshape(rows, -1).double()
        std = flat.std(dim=0, keepdim=True)
        parts.append((flat - flat.mean(dim=0, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std)))
    features = torch.cat(parts, dim=1)
    if features.shape[1] > _MAX_FEATURES:
        gen = torch.Generator().manual_seed(0)
        projection = torch.randn(features.shape[1], _MAX_FEATURES, generator=gen, dtype=features.dtype)
        features = features @ projection
    return features
