"""minBERT: embeddings, transformer layers (add-norm, feed-forward), encoder and pooler.

Implements Devlin et al. (2019), "BERT", as the CS 224N 2023 default project specifies it:

    add_norm(x, y)  = LayerNorm(x + Dropout(Dense(y)))
    layer(h)        = add_norm(a, FFN(a)),  a = add_norm(h, MultiHead(h)),  FFN = Dense∘GELU∘Dense
    embed(ids)      = Dropout(LayerNorm(word[ids] + position[0..T) + token_type[0]))
    pooler(h)       = tanh(Dense(h_[CLS]))

`embed` and `encode` are separate steps because SMART (Chapter 6) perturbs the output of
the embedding layer and runs the encoder from there. Introduced in Chapter 3
(notebooks/03_minbert).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadSelfAttention, additive_mask


@dataclass
class BertConfig:
    """The subset of a Hugging Face `config.json` that minBERT needs."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        known = {f.name for f in fields(cls)}
        act = d.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"minBERT implements the exact GELU only; this checkpoint uses {act!r}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


# bert-base-uncased's published config.json (Devlin et al. 2019): the architecture of the
# paper profile, built with random weights for smoke runs where the weights cannot be downloaded.
BERT_BASE_UNCASED = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
                     "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12,
                     "pad_token_id": 0}


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.word_embedding = nn.Embedding(config.vocab_size, H, padding_idx=config.pad_token_id)
        self.pos_embedding = nn.Embedding(config.max_position_embeddings, H)
        self.tk_type_embedding = nn.Embedding(config.type_vocab_size, H)
        self.embed_layer_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.embed_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        B, T = input_ids.shape
        if T > self.pos_embedding.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than the {self.pos_embedding.num_embeddings} "
                             "positions the model has; truncate it (Tokenizer(..., max_length=...))")
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        if token_type_ids is None:
            tk_type = self.tk_type_embedding.weight[0]  # (H,): every token is type 0
        else:
            tk_type = self.tk_type_embedding(token_type_ids)  # (B, T, H)
        x = self.word_embedding(input_ids) + self.pos_embedding(positions) + tk_type  # (B, T, H)
        return self.embed_dropout(self.embed_layer_norm(x))


class BertLayer(nn.Module):
    """One transformer layer: multi-head attention, add-norm, feed-forward, add-norm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H, eps, p = config.hidden_size, config.layer_norm_eps, config.hidden_dropout_prob
        self.self_attention = MultiHeadSelfAttention(
            H, config.num_attention_heads, config.attention_probs_dropout_prob
        )
        self.attention_dense = nn.Linear(H, H)
        self.attention_layer_norm = nn.LayerNorm(H, eps=eps)
        self.attention_dropout = nn.Dropout(p)
        self.interm_dense = nn.Linear(H, config.intermediate_size)
        self.out_dense = nn.Linear(config.intermediate_size, H)
        self.out_layer_norm = nn.LayerNorm(H, eps=eps)
        self.out_dropout = nn.Dropout(p)

    @staticmethod
    def add_norm(x, y, dense: nn.Linear, dropout: nn.Dropout, norm: nn.LayerNorm):
        """LayerNorm(x + Dropout(Dense(y))): the residual connection around a sub-layer."""
        return norm(x + dropout(dense(y)))

    def forward(self, h: torch.Tensor, mask: torch.Tensor, return_probs: bool = False):
        attn = self.self_attention(h, mask, return_probs=return_probs)
        attn, probs = attn if return_probs else (attn, None)
        a = self.add_norm(h, attn, self.attention_dense, self.attention_dropout, self.attention_layer_norm)
        f = F.gelu(self.interm_dense(a))  # (B, T, intermediate)
        out = self.add_norm(a, f, self.out_dense, self.out_dropout, self.out_layer_norm)
        return (out, probs) if return_probs else out


class BertModel(nn.Module):
    """minBERT. `model(input_ids, attention_mask)` returns
    {"last_hidden_state": (B, T, H), "pooler_output": (B, H)}."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.bert_layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler_dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module):
        # BERT's initialisation (truncated normal in the original; normal here), std 0.02.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # -- the two steps SMART separates -------------------------------------------------
    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        """(B, T) token ids -> (B, T, H) embedding-layer output (after LayerNorm, dropout)."""
        return self.embeddings(input_ids, token_type_ids)

    def encode(self, embeddings: torch.Tensor, attention_mask: torch.Tensor, return_attentions=False):
        """Run the encoder and pooler from an embedding tensor (B, T, H)."""
        mask = additive_mask(attention_mask, embeddings.dtype)  # (B, 1, 1, T)
        h, attentions = embeddings, []
        for layer in self.bert_layers:
            if return_attentions:
                h, probs = layer(h, mask, return_probs=True)
                attentions.append(probs)
            else:
                h = layer(h, mask)
        out = {"last_hidden_state": h, "pooler_output": torch.tanh(self.pooler_dense(h[:, 0]))}
        if return_attentions:
            out["attentions"] = attentions  # per layer: (B, heads, T, T)
        return out

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_attentions=False):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.encode(self.embed(input_ids, token_type_ids), attention_mask, return_attentions)

    @classmethod
    def from_pretrained(cls, name_or_path: str = "all-MiniLM-L6-v2", **config_overrides) -> "BertModel":
        """Load pre-trained weights: a local checkpoint directory, the offline default
        "all-MiniLM-L6-v2", or a Hub id such as "bert-base-uncased" (needs a network).
        `config_overrides` (e.g. hidden_dropout_prob=0.3) replace config.json values. A checkpoint
        that cannot be read or does not fit is one CheckpointError naming the path."""
        from . import pretrained as ckpt  # the files; pretrained.py does not import this module

        known = {f.name for f in fields(BertConfig)}
        unknown = sorted(set(config_overrides) - known)
        if unknown:  # a misspelt override would otherwise be ignored without a word
            raise TypeError(f"Unknown BertConfig field(s) {unknown}; choose from {sorted(known)}")
        path = ckpt.resolve_checkpoint(name_or_path)
        model = cls(BertConfig.from_dict({**ckpt.read_config(path), **config_overrides}))
        state = ckpt.convert_state_dict(ckpt.read_state_dict(path))
        mismatched = ckpt.shape_mismatches(model, state)
        if mismatched:  # load_state_dict would raise one line per tensor
            raise ckpt.CheckpointError(
                f"Checkpoint {path} does not fit its config.json: {len(mismatched)} weight(s) have other shapes "
                f"(first: {mismatched[0]}); config.json and the weights come from different models: "
                "copy or download the checkpoint again")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or missing:
            raise ckpt.CheckpointError(
                f"Checkpoint {path} does not fit minBERT: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                "is it a BERT checkpoint?")
        model.name_or_path = str(name_or_path)
        model.checkpoint_dir = path
        return model
