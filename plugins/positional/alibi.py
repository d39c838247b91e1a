"""ALiBi, attention with linear biases (Press et al., 2022).

No position is added to the tokens at all. Instead every attention score is lowered in
proportion to how far back the key is:

    score(i, j) = q_i · k_j / sqrt(D) - slope_h * (i - j)      for j <= i

Each head h has its own slope (a geometric series 1/2, 1/4, 1/8, ... for 8 heads), so
some heads look far back and others mostly at the last few tokens. No parameters.
"""

from __future__ import annotations

import math

import torch

from gptf import hookimpl
from gptf.interfaces import PositionalEncoding


def alibi_slopes(n_head: int) -> torch.Tensor:
    """The paper's slopes: 2^(-8/n), 2^(-16/n), ... for n heads (n a power of two); other
    head counts take the slopes of the power of two below, then every other one above."""

    def power_of_two(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    below = 2 ** math.floor(math.log2(n_head))
    slopes = power_of_two(below) + power_of_two(2 * below)[0::2][: n_head - below]
    return torch.tensor(slopes)  # (H,)


class AlibiPositions(PositionalEncoding):
    def __init__(self, n_embd: int, n_head: int, head_dim: int, seq_len: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_head), persistent=False)

    def score_bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        distance = (q_positions[:, None] - k_positions[None, :]).clamp(min=0)  # (Tq, Tk); future keys are masked anyway
        return -self.slopes[:, None, None] * distance  # (H, Tq, Tk)


@hookimpl
def register_positional_encodings() -> dict[str, type]:
    return {"alibi": AlibiPositions}
