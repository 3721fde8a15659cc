"""Ordinary models over padded token ids whose TorchScript trace is right only at the data's
sequence length: the dynamic_axes check must catch them (or the ladder must export them right).

- LoopOverSeq: a Python loop over the sequence; the trace unrolls it for the sample's length.
- TrimToLongest: `.item()` trims padding to the batch's longest real length; the trace keeps it.
- MeanOverLength: divides by `torch.tensor(x.shape[1])`, a constant in the trace.
- SmallProbabilities: outputs below 0.05 everywhere (the all-zero ONNX case).
"""
import torch
from torch import nn

VOCAB, WIDTH, CLASSES = 50, 16, 3


class _TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)


class LoopOverSeq(_TokenModel):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, tokens, mask):
        x = self.embed(tokens)
        h = x.new_zeros(x.shape[0], WIDTH)
        for t in range(x.shape[1]):  # marker: loop
            keep = mask[:, t : t + 1].float()
            h = keep * torch.tanh(self.cell(torch.cat([h, x[:, t]], dim=-1))) + (1 - keep) * h
        return self.head(h)


class TrimToLongest(_TokenModel):
    def forward(self, tokens, mask):
        longest = int(mask.sum(dim=1).max().item())  # marker: item
        tokens, mask = tokens[:, :longest], mask[:, :longest]
        keep = mask.unsqueeze(-1).float()
        pooled = (self.embed(tokens) * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


class MeanOverLength(_TokenModel):
    def forward(self, tokens, mask):
        x = self.embed(tokens) * mask.unsqueeze(-1).float()
        return self.head(x.sum(dim=1) / torch.tensor(float(x.shape[1])))  # marker: frozen length


class SmallProbabilities(_TokenModel):
    """Probabilities over many classes: every value below 0.05."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(WIDTH, 64)

    def forward(self, tokens, mask):
        keep = mask.unsqueeze(-1).float()
        pooled = (self.embed(tokens) * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return torch.softmax(self.head(pooled) * 0.1, dim=-1)


def token_metadata(name: str, classes: int = CLASSES) -> dict:
    seq = {0: "batch", 1: "seq_len"}
    return {"model_name": name, "input_names": ["tokens", "mask"], "output_names": ["logits"],
            "input_shapes": {"tokens": [-1, -1], "mask": [-1, -1]}, "output_shape": {"logits": [-1, classes]},
            "dynamic_axes": {"tokens": seq, "mask": seq, "logits": {0: "batch"}},
            "onnx_opset": 17, "architecture": "token-pooling", "task_type": "classification"}


def token_data(rows: int = 48, seq: int = 16, seed: int = 0) -> dict:
    """Token ids padded to `seq` (every row the same padded length), real lengths seq/2..seq-2."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 2, seq - 1, size=rows)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    tokens = rng.integers(1, VOCAB, size=(rows, seq)).astype(np.int64) * mask
    return {"tokens": tokens, "mask": mask}


class ZeroUnderExport(SmallProbabilities):
    """Right in PyTorch; all zeros in the exported graph (both exporters)."""

    def forward(self, tokens, mask):
        probs = super().forward(tokens, mask)
        if torch.onnx.is_in_onnx_export():
            probs = probs * 0.0
        return probs


class OffsetUnderExport(_TokenModel):
    """Two outputs; `shifted` is off by 0.1 in the exported graph, `logits` exact."""

    def forward(self, tokens, mask):
        keep = mask.unsqueeze(-1).float()
        logits = self.head((self.embed(tokens) * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0))
        shifted = logits * 2.0
        if torch.onnx.is_in_onnx_export():
            shifted = shifted + 0.1
        return logits, shifted


class PositionsUpTo20(_TokenModel):
    """A learned position table of 20 rows: the forward itself fails past 20 tokens."""

    def __init__(self):
        super().__init__()
        self.positions = nn.Parameter(torch.randn(20, WIDTH) * 0.1)

    def forward(self, tokens, mask):
        x = (self.embed(tokens) + self.positions[: tokens.shape[1]]) * mask.unsqueeze(-1).float()
        return self.head(x.sum(dim=1))


class AbortsAtOtherLengths(_TokenModel):
    """Its native code dies (abort) at any length but the data's 16: a crash, not an exception."""

    def forward(self, tokens, mask):
        if tokens.shape[1] != 16 and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            import os

            os.abort()
        keep = mask.unsqueeze(-1).float()
        return self.head((self.embed(tokens) * keep).sum(dim=1))


def two_output_metadata(name: str) -> dict:
    meta = token_metadata(name)
    meta["output_names"] = ["logits", "shifted"]
    meta["output_shape"] = {"logits": [-1, CLASSES], "shifted": [-1, CLASSES]}
    meta["dynamic_axes"]["shifted"] = {0: "batch"}
    return meta
