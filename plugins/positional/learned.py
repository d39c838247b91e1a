"""Learned absolute positions (GPT-2 style): one trainable vector per position, added to
the token embedding. Costs ``seq_len * n_embd`` parameters and cannot go past seq_len."""

from __future__ import annotations

import torch
from torch import nn

from gptf import hookimpl
from gptf.interfaces import PositionalEncoding


class LearnedPositions(PositionalEncoding):
    def __init__(self, n_embd: int, n_head: int, head_dim: int, seq_len: int) -> None:
        super().__init__()
        self.table = nn.Embedding(seq_len, n_embd)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x + self.table(positions)  # (B, T, C) + (T, C)


@hookimpl
def register_positional_encodings() -> dict[str, type]:
    return {"learned": LearnedPositions}
