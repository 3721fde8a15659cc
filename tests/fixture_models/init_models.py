"""Models `atlas-bundle init` cannot describe, each refused in one line (tests/test_init.py)."""
import torch
from torch import nn


class Masked(nn.Module):
    """Takes an optional mask after x: columns must name these parameters, in this order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 2)

    def forward(self, x, mask=None, bias=None):
        return self.head(x)


class KeywordOnly(Masked):
    def forward(self, x, *, scale):
        return self.head(x) * scale


class NestedOutput(Masked):
    def forward(self, x, mask=None, bias=None):
        y = self.head(x)
        return y, (y, y)


class BatchLast(Masked):
    def forward(self, x, mask=None, bias=None):
        return self.head(x).t()


KINDS = {"masked": Masked, "keyword_only": KeywordOnly, "nested_output": NestedOutput, "batch_last": BatchLast}


def build(kind: str = "masked") -> nn.Module:
    torch.manual_seed(0)
    return KINDS[kind]()
