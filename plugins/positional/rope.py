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
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos[positions], self.sin[positions]  # (T, D/2)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x1[i], x2[i]) of the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


@hookimpl
def register_positional_encodings() -> dict[str, type]:
    return {"rope": RotaryPositions}
