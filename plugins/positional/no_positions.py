"""No positional information at all. The causal mask alone still leaks some order
(a token can count how many tokens it sees), which is what the ablation shows."""

from __future__ import annotations

from gptf import hookimpl
from gptf.interfaces import PositionalEncoding


class NoPositions(PositionalEncoding):
    def __init__(self, n_embd: int, n_head: int, head_dim: int, seq_len: int) -> None:
        super().__init__()


@hookimpl
def register_positional_encodings() -> dict[str, type]:
    return {"none": NoPositions}
