"""Residual models whose one misbehaving block misbehaves only under ONNX export (both exporters):
the round-trip fails, and localization must name that block and its source line.

Lines the tests look for carry a `# marker:` comment, so no line number is written down twice.
"""
import torch
from torch import nn
from fixture_models.single_io import single_io_metadata

FEATURES, WIDTH, CLASSES = 4, 16, 3


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.norm(x))


class HalfBlock(Block):
    """Rounds its branch through float16 when exported: values past float16's 65504 become Inf."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # marker: HalfBlock.forward
        y = self.fc(self.norm(x)) * 1e5
        if torch.onnx.is_in_onnx_export():
            y = y.half().float()  # marker: half cast
        return x + y / 1e5


class NanBlock(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # marker: NanBlock.forward
        y = self.fc(self.norm(x))
        if torch.onnx.is_in_onnx_export():
            y = y * float("nan")
        return x + y


class BreaksUnderExport(nn.Module):
    """Wraps any block of a zoo model: under export its output is scaled by 1.5."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):  # marker: BreaksUnderExport.forward
        out = self.inner(*args, **kwargs)
        return out * 1.5 if torch.onnx.is_in_onnx_export() else out


class ResidualNet(nn.Module):
    """inp -> blocks (3 residual blocks, the middle one `fault`) -> head; fault None passes."""

    def __init__(self, fault: str | None = "half"):
        super().__init__()
        middle = {"half": HalfBlock, "nan": NanBlock, None: Block}[fault]
        self.inp = nn.Linear(FEATURES, WIDTH)
        self.blocks = nn.Sequential(Block(), middle(), Block())
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.blocks(self.inp(x))))


class TwoHeads(nn.Module):
    """Two outputs, so the model itself is not compared as one module; it breaks in its own forward."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(FEATURES, WIDTH)
        self.first = nn.Linear(WIDTH, CLASSES)
        self.second = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.body(x))
        second = self.second(hidden)
        if torch.onnx.is_in_onnx_export():
            second = second + 1.0  # marker: outside every submodule
        return self.first(hidden), second


def build_model(fault: str | None = "half") -> ResidualNet:
    torch.manual_seed(0)
    return ResidualNet(fault).eval()


def metadata() -> dict:
    return single_io_metadata("residual_net", "x", [-1, FEATURES], [-1, CLASSES], "residual-mlp")


def marked_line(marker: str) -> int:
    """1-based line of this file that carries `# marker: <marker>`."""
    with open(__file__) as handle:
        return next(n for n, line in enumerate(handle, 1) if line.rstrip().endswith(f"# marker: {marker}"))
