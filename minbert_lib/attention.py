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

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v = split_heads(query(x)), split_heads(key(x)), split_heads(value(x)),
        computed as ONE matrix multiply: the three (H, H) weight matrices stacked into a
        (3H, H) one. Same numbers as three separate projections, but one large GEMM is
        faster than three small ones, and so is its backward pass. The parameters stay
        the three CS 224N Linear layers; only the multiply is fused."""
        B, T, H = x.shape
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3H, H)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])  # (3H,)
        qkv = F.linear(x, weight, bias)  # (B, T, 3H): [q | k | v] along the last axis
        qkv = qkv.view(B, T, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # three (B, heads, T, d_k) views

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_probs: bool = False
    ):
        """x: (B, T, H); mask: additive (B, 1, 1, T). Returns (B, T, H) [and probs]."""
        B, T, H = x.shape
        q, k, v = self.project_qkv(x)
        dropout_p = self.dropout_p if self.training else 0.0
        probs = None
        if return_probs:
            # The readable path, used to look inside heads (in eval mode: no dropout).
            out, probs = scaled_dot_product_attention(q, k, v, mask)
        elif dropout_p > 0.0 and x.device.type == "cpu":
            # Training on a CPU: PyTorch's fused kernel has no dropout there and falls back
            # to a slower generic path, so we write Eq. (1) with dropout ourselves.
            out = _attention_with_dropout(q, k, v, mask, dropout_p)
        else:
            # The fused kernel: same equation, dropout applied to the probabilities.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(B, T, H)  # merge heads: (B, T, H)
        return (out, probs) if return_probs else out


def _attention_with_dropout(q, k, v, mask, dropout_p: float) -> torch.Tensor:
    """Eq. (1) with dropout on the probabilities, for training on a CPU.

    Equal to F.scaled_dot_product_attention(q, k, v, mask, dropout_p) in distribution (the
    dropout masks differ). `baddbmm` computes mask + (q k^T) / sqrt(d_k) in one kernel,
    which is what makes this faster than PyTorch's CPU fallback (that one scales q and k
    separately, adds the mask in another pass and guards against fully masked rows,
    which a BERT batch never has: [CLS] is always a real key).
    """
    B, heads, T, d = q.shape
    if mask is not None and mask.dtype == torch.bool:  # SDPA's boolean form: True = attend
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, torch.finfo(q.dtype).min)
    q3, k3, v3 = (t.reshape(B * heads, T, d) for t in (q, k, v))  # batch the heads
    if mask is None:
        scores = torch.bmm(q3, k3.transpose(1, 2)) / math.sqrt(d)
    else:
        mask3 = mask.expand(B, heads, mask.size(-2), T).reshape(B * heads, mask.size(-2), T)
        scores = torch.baddbmm(mask3, q3, k3.transpose(1, 2), alpha=1.0 / math.sqrt(d))
    probs = F.dropout(scores.softmax(dim=-1), dropout_p)  # (B*heads, T, T)
    return torch.bmm(probs, v3).view(B, heads, T, d)
