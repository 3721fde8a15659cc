"""A model that is fine in FP32 but overflows in FP16: an unscaled dot product of large embeddings.

Token embeddings of about +-100 in 16 dimensions give q.k scores up to ~1.6e5, beyond FP16's max
65504, inside `encoder.layers.0.attention.scores`; everything before it fits FP16 comfortably.
"""
import torch
from torch import nn
from fixture_models.single_io import single_io_metadata

VOCAB, DIM, SEQ = 50, 16, 8


class Scores(nn.Module):
    """Attention scores without the 1/sqrt(d) scaling."""

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-1, -2)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.scores = Scores()
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.scores(x, x), dim=-1)
        return self.out(weights @ x) / 100.0


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = Attention()

    def forward(self, x):
        return self.attention(x)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Layer()])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class OverflowModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.encoder = Encoder()
        self.head = nn.Linear(DIM, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


def build_model() -> OverflowModel:
    torch.manual_seed(0)
    model = OverflowModel()
    with torch.no_grad():
        model.embed.weight.uniform_(-100.0, 100.0)
    return model.eval()


def metadata() -> dict:
    return single_io_metadata("fp16_overflow", "tokens", [-1, SEQ], [-1, 2], "dot-attention")
