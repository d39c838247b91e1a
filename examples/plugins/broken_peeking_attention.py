"""A deliberately BROKEN attention plugin: it forgets the causal mask.

Every token may look at every other token, including the ones after it. Training loss
drops fast (the answer is right there to copy), but the model is useless for generation,
where the future does not exist yet. ``gptf plugin check`` catches it:

    gptf plugin check examples/plugins/broken_peeking_attention.py
    ... causality  fail  it looks into the future: changing tokens 10..15 changed the output at position 0 ...

The fix is one line: ``scores = scores.masked_fill(~causal_mask(Tq, Tk), float("-inf"))``
before the softmax (see gptf/plugins/attention/explicit.py). Used by tests/test_plugin_check.py.
"""

from __future__ import annotations

import math

import torch

from gptf import hookimpl
from gptf.interfaces import Attention


class PeekingAttention(Attention):
    def __init__(self, n_head: int, n_kv_head: int, head_dim: int, seq_len: int) -> None:
        super().__init__()
        self.groups = n_head // n_kv_head
        self.scale = 1.0 / math.sqrt(head_dim)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        k = k.repeat_interleave(self.groups, dim=1)
        v = v.repeat_interleave(self.groups, dim=1)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, Tq, Tk)
        if bias is not None:
            scores = scores + bias
        # BUG (on purpose): no causal mask here, so query i also sees keys j > i.
        return torch.softmax(scores, dim=-1) @ v


@hookimpl
def register_attentions() -> dict[str, type]:
    return {"peeking": PeekingAttention}
