"""Causal attention with PyTorch's fused ``scaled_dot_product_attention``.

Mathematically the same as :mod:`explicit` (a test proves it); the fused kernel never
builds the full (T, T) score matrix in Python, so it is faster and lighter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gptf import hookimpl
from gptf.interfaces import Attention, causal_mask


class SdpaAttention(Attention):
    def __init__(self, n_head: int, n_kv_head: int, head_dim: int, seq_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.grouped = n_kv_head != n_head
        self.dropout = dropout

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # PyTorch's fused CPU kernel is ~2x slower in bf16 than in fp32 (forward + backward):
            # under bf16 autocast, attention (a small part of the work) runs in fp32.
            with torch.autocast("cpu", enabled=False):
                return self.forward(q.float(), k.float(), v.float(), bias).to(q.dtype)
        n_q, n_k = q.size(-2), k.size(-2)
        dropout = self.dropout if self.training else 0.0
        if bias is None and n_q == n_k:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, enable_gqa=self.grouped)
        mask: torch.Tensor | None = None
        if n_q > 1:
            mask = causal_mask(n_q, n_k, q.device)
        if bias is not None:
            bias = bias.to(q.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=self.grouped)


@hookimpl
def register_attentions() -> dict[str, type]:
    return {"sdpa": SdpaAttention}
