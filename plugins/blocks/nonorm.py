"""No norm inside the blocks: what the norms are for, by taking them away.

    x = x + Attention(x)
    x = x + MLP(x)

The final norm before the output layer stays (so the logits keep a sane scale); only the
blocks lose theirs. Without them nothing keeps the size of the residual stream in check, and
the attention scores q·k grow with it: expect a higher loss and, at a high learning rate, loss
spikes (``gptf ablate`` flags them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import AttentionContext, Block, make_dropout


class NoNorm(Block):
    final_norm = True

    def __init__(self, make_norm: Callable[[], nn.Module], attention: nn.Module, mlp: nn.Module, config: Any) -> None:
        super().__init__()
        self.attn = attention
        self.mlp = mlp
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        x = x + self.attn(x, context)
        x = x + self.dropout(self.mlp(x))
        return x


@hookimpl
def register_blocks() -> dict[str, type]:
    return {"nonorm": NoNorm}
