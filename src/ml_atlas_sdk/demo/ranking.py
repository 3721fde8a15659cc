"""A small multitask ranking model: token ids + dense features -> click-through rate and 3 logits."""
from __future__ import annotations

import torch
from torch import nn

VOCAB_SIZE = 1000
DENSE_FEATURES = 16


class MultitaskRanker(nn.Module):
    def __init__(self, vocab_size: int = VOCAB_SIZE, embed_dim: int = 32, dense_features: int = DENSE_FEATURES, hidden: int = 64):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dense_proj = nn.Sequential(nn.LayerNorm(dense_features), nn.Linear(dense_features, embed_dim), nn.GELU())
        self.trunk = nn.Sequential(nn.Linear(2 * embed_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.ctr_head = nn.Linear(hidden, 1)
        self.class_head = nn.Linear(hidden, 3)

    def forward(self, tokens: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.embedding(tokens).mean(dim=1)  # mean over seq_len, so seq_len stays dynamic
        features = torch.cat([pooled, self.dense_proj(dense)], dim=-1)
        hidden = self.trunk(features)
        return torch.sigmoid(self.ctr_head(hidden)), self.class_head(hidden)


def build_model(**kwargs) -> MultitaskRanker:
    return MultitaskRanker(**kwargs)


def demo_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights: the same seed gives the same state_dict on every machine."""
    torch.manual_seed(seed)
    return build_model().state_dict()
