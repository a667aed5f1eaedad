"""Scaled dot-product and multi-head self-attention.

Implements Vaswani et al. (2017), "Attention Is All You Need", Eq. (1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

where M is an additive mask (0 for real tokens, a large negative number for padding keys),
as the CS 224N minBERT handout specifies. Introduced in Chapter 2 (notebooks/02_attention).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a (B, T) mask of 1 (token) / 0 (padding) into a (B, 1, 1, T) additive mask.

    Padding keys get the most negative finite value of `dtype`, so after the softmax they
    receive (numerically) zero weight; real keys get 0. The two singleton axes broadcast
    over heads and query positions.
    """
    mask = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - mask) * torch.finfo(dtype).min


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1), written out. q, k, v: (B, heads, T, d_k); mask: additive, broadcastable.

    Returns (output (B, heads, T, d_k), attention probabilities (B, heads, T, T)).
    This is the readable version the chapters use to look inside a head; the model's
    forward pass calls PyTorch's fused kernel, which computes the same thing faster.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, heads, T, T)
    if mask is not None:
        scores = scores + mask
    probs = scores.softmax(dim=-1)
    return probs @ v, probs


class MultiHeadSelfAttention(nn.Module):
    """The `self_attention` block of a BERT layer: project, split into heads, attend, merge.

    Parameter names follow the CS 224N minBERT (query, key, value); `pretrained.py`
    maps the Hugging Face checkpoint names onto them.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout_p = dropout

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, heads, T, d_k)"""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_probs: bool = False
    ):
        """x: (B, T, H); mask: additive (B, 1, 1, T). Returns (B, T, H) [and probs]."""
        B, T, H = x.shape
        q, k, v = (self.split_heads(proj(x)) for proj in (self.query, self.key, self.value))
        if return_probs:
            # The readable path, used to look inside heads (in eval mode: no dropout).
            out, probs = scaled_dot_product_attention(q, k, v, mask)
        else:
            # The fused kernel: same equation, dropout applied to the probabilities.
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
            )
            probs = None
        out = out.transpose(1, 2).reshape(B, T, H)  # merge heads: (B, T, H)
        return (out, probs) if return_probs else out
