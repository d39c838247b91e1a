"""Causal attention written out step by step, for reading (and for attention maps).

scores  = q @ k^T / sqrt(D)          how well each query matches each key
scores += bias                        (ALiBi and friends)
scores[future] = -inf                 the causal mask: no peeking ahead
weights = softmax(scores)             each row sums to 1
output  = weights @ v                 a weighted average of the values
"""

from __future__ import annotations

import math

import torch

from gptf import hookimpl
from gptf.interfaces import Attention, causal_mask


class ExplicitAttention(Attention):
    def __init__(self, n_head: int, n_kv_head: int, head_dim: int, seq_len: int) -> None:
        super().__init__()
        self.groups = n_head // n_kv_head
        self.scale = 1.0 / math.sqrt(head_dim)
        self.last_weights: torch.Tensor | None = None  # (B, H, Tq, Tk), kept when record=True
        self.record = False

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.groups > 1:  # grouped-query: each key/value head serves several query heads
            k = k.repeat_interleave(self.groups, dim=1)
            v = v.repeat_interleave(self.groups, dim=1)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, Tq, Tk)
        if bias is not None:
            scores = scores + bias.to(scores.dtype)
        allowed = causal_mask(q.size(-2), k.size(-2), q.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if self.record:
            self.last_weights = weights.detach()
        return weights @ v  # (B, H, Tq, D)


@hookimpl
def register_attentions() -> dict[str, type]:
    return {"explicit": ExplicitAttention}
