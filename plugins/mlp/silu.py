"""The feed-forward network of each block: widen, SiLU, narrow.

SiLU(x) = x * sigmoid(x), a smooth ReLU. With ``hidden_dim = 4 * dim`` and biases this
block has 8d^2 + 5d parameters, the bulk of each layer's 12d^2 + 11d.
"""

from __future__ import annotations

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import mark_residual_output


class SiluMLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = nn.SiLU()
        self.down = mark_residual_output(nn.Linear(hidden_dim, dim, bias=bias))  # adds to the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


@hookimpl
def register_mlps() -> dict[str, type]:
    return {"silu": SiluMLP}
