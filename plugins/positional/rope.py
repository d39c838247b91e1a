"""RoPE, rotary position embedding (Su et al., 2021).

Each pair of channels in a query or key is rotated by an angle proportional to the
token's position. The dot product of a rotated query and key then depends only on how
far apart they are: attention sees *relative* positions, and no parameters are added.
"""

from __future__ import annotations

import torch

from gptf import hookimpl
from gptf.interfaces import PositionalEncoding


class RotaryPositions(PositionalEncoding):
    def __init__(self, n_embd: int, n_head: int, head_dim: int, seq_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE rotates channel pairs, so the head size must be even; got {head_dim}")
        # One frequency per channel pair: fast rotations for early pairs, slow for late ones.
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (D/2,)
        angles = torch.outer(torch.arange(seq_len).float(), inv_freq)  # (T, D/2)
        # One row per position, laid out for :func:`_rotate`: [cos, cos] and [-sin, sin].
        self.register_buffer("cos", torch.cat((angles.cos(), angles.cos()), dim=-1), persistent=False)  # (T, D)
        self.register_buffer("sin_signed", torch.cat((-angles.sin(), angles.sin()), dim=-1), persistent=False)
        # the rows looked up last: (positions, dtype, cos, sin), see rows()
        self._looked_up: tuple[torch.Tensor, torch.dtype, torch.Tensor, torch.Tensor] | None = None

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.rows(positions, q.dtype)  # (T, D) each
        return _rotate(q, cos, sin), _rotate(k, cos, sin)

    def rows(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos and sin rows of ``positions``. Every layer of one forward pass asks for the same
        ``positions`` tensor, so they are looked up once per pass, not once per layer: while
        generating, a token's pass is ~100 small operations and these were 16 of them. (The model makes
        a new ``positions`` tensor for every pass and never changes one in place.)"""
        if torch.compiler.is_compiling():  # a compiled graph does its own bookkeeping (and must not guard on ours)
            return self.cos.index_select(0, positions).to(dtype), self.sin_signed.index_select(0, positions).to(dtype)
        last = self._looked_up
        if last is not None and last[0] is positions and last[1] == dtype:
            return last[2], last[3]
        cos = self.cos.index_select(0, positions).to(dtype)
        sin = self.sin_signed.index_select(0, positions).to(dtype)
        self._looked_up = (positions, dtype, cos, sin)
        return cos, sin


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x1[i], x2[i]) of the two halves of the last dimension:

        x1' = x1·cos - x2·sin        x2' = x2·cos + x1·sin

    written as ``x·[cos, cos] + swap(x)·[-sin, sin]`` with ``swap(x) = [x2, x1]``: the same
    numbers, bit for bit, in 4 tensor operations instead of 8 (it runs once per layer per token).
    """
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)  # (B, H, T, D): halves swapped
    return x * cos + swapped * sin_signed


@hookimpl
def register_positional_encodings() -> dict[str, type]:
    return {"rope": RotaryPositions}
