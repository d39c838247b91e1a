"""Parallel attention and MLP (GPT-J, PaLM): both read the same normalised input.

    h = Norm(x)
    x = x + Attention(h) + MLP(h)

One norm per block instead of two, and attention and MLP no longer wait for each other (on
big hardware they run side by side: PaLM reports ~15% faster training). The MLP can no longer
build on what this layer's attention just found; at large scale that costs little.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import AttentionContext, Block, make_dropout


class Parallel(Block):
    final_norm = True

    def __init__(self, make_norm: Callable[[], nn.Module], attention: nn.Module, mlp: nn.Module, config: Any) -> None:
        super().__init__()
        self.norm = make_norm()
        self.attn = attention
        self.mlp = mlp
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        h = self.norm(x)
        return x + self.attn(h, context) + self.dropout(self.mlp(h))


@hookimpl
def register_blocks() -> dict[str, type]:
    return {"parallel": Parallel}
