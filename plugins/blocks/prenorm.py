"""Pre-norm (GPT-2, LLaMA): normalise what goes *into* each sub-layer, add its result back.

    x = x + Attention(Norm(x))      look at earlier tokens
    x = x + MLP(Norm(x))            think about each token on its own

The residual stream ``x`` itself is never normalised, so the gradient flows straight from the
loss down to the first layer through the additions: deep pre-norm models train without
warm-up tricks. The price: the stream grows layer by layer, so the model needs one more norm
after the last block (``final_norm``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import AttentionContext, Block, make_dropout


class PreNorm(Block):
    final_norm = True

    def __init__(self, make_norm: Callable[[], nn.Module], attention: nn.Module, mlp: nn.Module, config: Any) -> None:
        super().__init__()
        self.norm1 = make_norm()
        self.attn = attention
        self.norm2 = make_norm()
        self.mlp = mlp
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), context)  # residual
        x = x + self.dropout(self.mlp(self.norm2(x)))  # residual
        return x


@hookimpl
def register_blocks() -> dict[str, type]:
    return {"prenorm": PreNorm}
