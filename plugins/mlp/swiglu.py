"""SwiGLU (Shazeer, 2020), the feed-forward block of LLaMA and most newer models.

Two parallel projections; one goes through SiLU and *gates* the other, element by element:

    out = down( SiLU(gate(x)) * up(x) )

Three matrices instead of two, so to keep the parameter count close to a plain MLP the
hidden size is 2/3 of the usual one, rounded up to a multiple of ``multiple_of``
(friendlier to matrix kernels). With d = 256, ``hidden_dim`` = 1024: 2/3 · 1024 = 682.7
-> 688, so 3·256·688 + 2·688 + 256 = 530,016 parameters per block with biases, against
525,568 for the SiLU MLP. ``gptf inspect`` shows the exact count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptf import hookimpl
from gptf.interfaces import mark_residual_output


def swiglu_hidden_size(hidden_dim: int, multiple_of: int = 8) -> int:
    """2/3 of ``hidden_dim``, rounded up to a multiple of ``multiple_of``."""
    return multiple_of * math.ceil(int(2 * hidden_dim / 3) / multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool, multiple_of: int = 8) -> None:
        super().__init__()
        if multiple_of <= 0:
            raise ValueError(f"multiple_of must be > 0, got {multiple_of}")
        hidden = swiglu_hidden_size(hidden_dim, multiple_of)
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = mark_residual_output(nn.Linear(hidden, dim, bias=bias))  # adds to the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, hidden) -> (B, T, dim)


@hookimpl
def register_mlps() -> dict[str, type]:
    return {"swiglu": SwiGLU}
