"""Tiny random-init models of the families users bring, built in code (no downloads).

Each factory seeds torch itself so the pipeline's separate builds agree; tests also save the
state_dict as model.weights. Tests copy this file into a project copy's models/ code dir as
`zoo_models.py`, so it imports nothing from the test suite. HF models are wrapped the way users
wrap them: positional tensors in, a tensor or tuple out.
"""
from __future__ import annotations

import torch
from torch import nn

VOCAB = 100


def _hf_config(cls, attn: str | None, **kwargs):
    config = cls(**kwargs)
    if attn:
        config._attn_implementation = attn  # "eager": plain matmul attention, no SDPA kernel
    return config


class BertClassifier(nn.Module):
    def __init__(self, attn: str | None = None):
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = _hf_config(BertConfig, attn, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=3)
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


class GPT2LM(nn.Module):
    def __init__(self, with_mask: bool = True, attn: str | None = None):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        config = _hf_config(GPT2Config, attn, vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                            bos_token_id=0, eos_token_id=0, use_cache=False)
        self.gpt2 = GPT2LMHeadModel(config)
        self.with_mask = with_mask

    def forward(self, input_ids, attention_mask=None):
        mask = attention_mask if self.with_mask else None
        return self.gpt2(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


class GPT2NoMask(GPT2LM):
    def __init__(self, attn: str | None = None):
        super().__init__(with_mask=False, attn=attn)

    def forward(self, input_ids):
        return super().forward(input_ids)


class T5Seq2Seq(nn.Module):
    """An encoder-decoder: two dynamic sequence axes (source and target lengths) that change apart."""

    def __init__(self, attn: str | None = "eager"):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        config = _hf_config(T5Config, attn, vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                            decoder_start_token_id=0, use_cache=False)
        self.t5 = T5ForConditionalGeneration(config)

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        return self.t5(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                       use_cache=False).logits


class LlamaLM(nn.Module):
    """A decoder with rotary position embeddings and grouped-query attention."""

    def __init__(self, attn: str | None = "eager"):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        config = _hf_config(LlamaConfig, attn, vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, use_cache=False)
        self.llama = LlamaForCausalLM(config)

    def forward(self, input_ids, attention_mask):
        return self.llama(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class ViTClassifier(nn.Module):
    def __init__(self, attn: str | None = None):
        super().__init__()
        from transformers import ViTConfig, ViTForImageClassification

        config = _hf_config(ViTConfig, attn, image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=5)
        self.vit = ViTForImageClassification(config)

    def forward(self, pixel_values):
        return self.vit(pixel_values=pixel_values).logits


class TorchEncoder(nn.Module):
    """nn.TransformerEncoder; in eval mode torch takes its fused "fast path" unless told not to."""

    def __init__(self, d_model: int = 32):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 2)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


class LSTMTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.tag = nn.Linear(16, 4)

    def forward(self, x):
        seq, (h, _) = self.lstm(x)
        return self.tag(seq), h[-1]


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.gru = nn.GRU(16, 24, batch_first=True, bidirectional=True)
        self.out = nn.Linear(48, 4)

    def forward(self, tokens):
        _, h = self.gru(self.embed(tokens))
        return self.out(torch.cat([h[0], h[1]], dim=-1))


class BagRanker(nn.Module):
    """Item bags (EmbeddingBag), a country id and float features; two heads."""

    def __init__(self):
        super().__init__()
        self.items = nn.EmbeddingBag(VOCAB, 16, mode="mean")
        self.country = nn.Embedding(20, 4)
        self.mlp = nn.Sequential(nn.Linear(16 + 4 + 1 + 3, 32), nn.ReLU())
        self.ctr = nn.Linear(32, 1)
        self.grade = nn.Linear(32, 3)

    def forward(self, item_ids, country, age, dense):
        h = self.mlp(torch.cat([self.items(item_ids), self.country(country), age.unsqueeze(-1), dense], dim=-1))
        return torch.sigmoid(self.ctr(h)), self.grade(h)


class BagRankerDict(BagRanker):
    """The same two heads returned by name, as many multi-task models return them."""

    def forward(self, item_ids, country, age, dense):
        ctr, grade = super().forward(item_ids, country, age, dense)
        return {"ctr": ctr, "grade": grade}


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, image):
        return self.head(self.features(image).flatten(1))


_FAMILIES = {
    "bert": BertClassifier, "gpt2_mask": GPT2LM, "gpt2_nomask": GPT2NoMask, "vit": ViTClassifier,
    "torch_encoder": TorchEncoder, "lstm": LSTMTagger, "gru": GRUClassifier, "bag_ranker": BagRanker,
    "bag_ranker_dict": BagRankerDict, "convnet": ConvNet, "t5": T5Seq2Seq, "llama": LlamaLM,
}


def build(family: str, **kwargs) -> nn.Module:
    """The factory every zoo case names: `zoo_models:build` with model.kwargs {family: ...}."""
    torch.manual_seed(0)
    model = _FAMILIES[family](**kwargs)
    if isinstance(model, ConvNet):  # random BatchNorm statistics, so eval mode is not the identity
        with torch.no_grad():
            for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
    return model.eval()
