"""Learned relative position bias (simplified from T5, Raffel et al., 2020), packaged.

Like ALiBi it adds a number to each attention score that depends only on how far back
the key is; unlike ALiBi the numbers are *learned*, one per head and distance:

    score(i, j) = q_i · k_j / sqrt(D) + bias[head, min(i - j, max_distance - 1)]

The table starts at zero, so a fresh model has no sense of order at all and has to learn
one. It costs ``max_distance * n_head`` parameters (128 x 4 = 512 for the teacher).
"""

from __future__ import annotations

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import PositionalEncoding

__version__ = "0.1.0"


class RelativeBias(PositionalEncoding):
    def __init__(self, n_embd: int, n_head: int, head_dim: int, seq_len: int, max_distance: int = 128) -> None:
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        self.max_distance = max_distance
        self.bias = nn.Parameter(torch.zeros(n_head, max_distance))  # (H, distances), learned

    def score_bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        distance = q_positions[:, None] - k_positions[None, :]  # (Tq, Tk); negative = future (masked anyway)
        distance = distance.clamp(0, self.max_distance - 1)
        return self.bias[:, distance]  # (H, Tq, Tk)


@hookimpl
def register_positional_encodings() -> dict[str, type]:
    return {"relative_bias": RelativeBias}
