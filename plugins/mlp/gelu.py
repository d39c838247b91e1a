"""The GPT-2 feed-forward block: widen, GELU, narrow.

GELU(x) = x * Φ(x), where Φ is the normal distribution's CDF: like SiLU a smooth ReLU,
slightly sharper around 0. Same shape and parameter count as :mod:`silu`
(8d^2 + 5d with biases and ``hidden_dim = 4d``), so a swap changes only the curve.
"""

from __future__ import annotations

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import mark_residual_output


class GeluMLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh' (GPT-2's formula), got {approximate!r}")
        self.up = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = nn.GELU(approximate=approximate)
        self.down = mark_residual_output(nn.Linear(hidden_dim, dim, bias=bias))  # adds to the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


@hookimpl
def register_mlps() -> dict[str, type]:
    return {"gelu": GeluMLP}
