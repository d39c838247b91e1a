"""Sinusoidal positions (Vaswani et al., 2017): a fixed table of sines and cosines added
to the token embeddings, no parameters.

    table[pos, 2i]   = sin(pos / 10000^(2i/C))
    table[pos, 2i+1] = cos(pos / 10000^(2i/C))

Each pair of channels is a clock ticking at its own speed, so every position gets a
unique pattern and nearby positions get similar ones. Our token embeddings start small
(N(0, 0.02)), so the table is scaled by ``scale`` to start just as loud; the original
Transformer instead multiplies the embeddings by sqrt(C).
"""

from __future__ import annotations

import math

import torch

from gptf import hookimpl
from gptf.interfaces import PositionalEncoding


class SinusoidalPositions(PositionalEncoding):
    def __init__(
        self, n_embd: int, n_head: int, head_dim: int, seq_len: int, base: float = 10000.0, scale: float = 0.02
    ) -> None:
        super().__init__()
        position = torch.arange(seq_len).float().unsqueeze(1)  # (T, 1)
        frequency = torch.exp(torch.arange(0, n_embd, 2).float() * (-math.log(base) / n_embd))  # (C/2,)
        table = torch.zeros(seq_len, n_embd)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)[:, : n_embd // 2]  # odd C: one cosine fewer
        self.register_buffer("table", table * scale, persistent=False)  # computed, so not saved

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x + self.table[positions].to(x.dtype)  # (B, T, C) + (T, C)


@hookimpl
def register_positional_encodings() -> dict[str, type]:
    return {"sinusoidal": SinusoidalPositions}
