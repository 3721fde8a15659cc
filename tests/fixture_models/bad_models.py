"""Models whose own code fails, each in one of the ways a stage must report in one line.

Tests copy this file into a project's models/ code dir (model.code_dirs) and also import it.
"""
import torch
from torch import nn

from ml_atlas_sdk.demo.ranking import MultitaskRanker


class NestedOutputRanker(MultitaskRanker):
    """Returns ((ctr, logits), ctr): two top-level items, as many as output_names, but not tensors."""

    def forward(self, tokens: torch.Tensor, dense: torch.Tensor):
        ctr, logits = super().forward(tokens, dense)
        return (ctr, logits), ctr


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.abs() > 1e3).any():
            raise ValueError("activation overflow")  # the user's own check, deep inside the model
        return self.lin(x)


class DeepModel(nn.Module):
    """x -> blocks.0 -> blocks.1: rows with a huge feature raise inside blocks.0."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.blocks = nn.Sequential(Block(width), Block(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def build_nested_output() -> NestedOutputRanker:
    torch.manual_seed(0)
    return NestedOutputRanker()


def build_refusing(**kwargs) -> nn.Module:
    raise ValueError("vocabulary file vocab.txt not found")


def build_deep() -> DeepModel:
    torch.manual_seed(0)
    return DeepModel()


def build_unreachable() -> nn.Module:
    raise ConnectionError("cannot download https://ml:s3cr3t-pass@models.example/ranker.pt")


class ExitingRanker(MultitaskRanker):
    """A forward that ends the process its own way: sys.exit is a BaseException, not an Exception."""

    def forward(self, tokens: torch.Tensor, dense: torch.Tensor):
        import sys

        sys.exit(3)


def build_exiting() -> ExitingRanker:
    torch.manual_seed(0)
    return ExitingRanker()
