"""Post-norm (the original Transformer, Vaswani et al. 2017; BERT, GPT-1): add, *then* normalise.

    x = Norm(x + Attention(x))
    x = Norm(x + MLP(x))

Every block ends with a norm, so the stream stays at unit size and no final norm is needed.
But the gradient to the early layers now passes through every norm on the way down: deeper
post-norm models need a careful warm-up and a lower learning rate to train at all. Compare
with ``gptf ablate recipes/teacher_3m.yaml --swap model.block=prenorm,postnorm``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import AttentionContext, Block, make_dropout


class PostNorm(Block):
    final_norm = False  # the last block already ends with a norm

    def __init__(self, make_norm: Callable[[], nn.Module], attention: nn.Module, mlp: nn.Module, config: Any) -> None:
        super().__init__()
        self.norm1 = make_norm()
        self.attn = attention
        self.norm2 = make_norm()
        self.mlp = mlp
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, context))
        x = self.norm2(x + self.dropout(self.mlp(x)))
        return x


@hookimpl
def register_blocks() -> dict[str, type]:
    return {"postnorm": PostNorm}
