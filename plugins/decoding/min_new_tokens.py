"""No <eos> before ``n`` new tokens, so the model cannot answer with nothing."""

from __future__ import annotations

import torch

from gptf import hookimpl
from gptf.interfaces import DecodingConstraint, DecodingState, Tokenizer


class MinNewTokens(DecodingConstraint):
    thread_safe = True  # (see DecodingConstraint)

    def __init__(self, tokenizer: Tokenizer, n: int = 3) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.eos_id = tokenizer.eos_id
        self.n = n

    def adjust_logits(self, logits: torch.Tensor, state: DecodingState) -> torch.Tensor:
        if len(state.new_ids) < self.n:
            logits[self.eos_id] = float("-inf")
        return logits


@hookimpl
def register_decoding_constraints() -> dict[str, type]:
    return {"min_new_tokens": MinNewTokens}
