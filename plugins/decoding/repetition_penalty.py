"""Repetition penalty (Keskar et al., 2019): make tokens already in the answer less
likely, which breaks "的的的的" loops. A score s of a repeated token becomes s / p if
positive and s * p if negative (p > 1). Only the answer's tokens count, not the prompt's,
because a good answer often repeats the question's words."""

from __future__ import annotations

import torch

from gptf import hookimpl
from gptf.interfaces import DecodingConstraint, DecodingState, Tokenizer


class RepetitionPenalty(DecodingConstraint):
    def __init__(self, tokenizer: Tokenizer, penalty: float = 1.1) -> None:
        if not 0 < penalty < float("inf"):  # (NaN fails this too)
            raise ValueError(f"penalty must be a finite number > 0, got {penalty}")
        self.penalty = penalty

    def adjust_logits(self, logits: torch.Tensor, state: DecodingState) -> torch.Tensor:
        if self.penalty == 1.0 or not state.new_ids:
            return logits
        seen = torch.tensor(list(set(state.new_ids)), dtype=torch.long)
        scores = logits[seen]
        return logits.index_put_((seen,), torch.where(scores > 0, scores / self.penalty, scores * self.penalty))


@hookimpl
def register_decoding_constraints() -> dict[str, type]:
    return {"repetition_penalty": RepetitionPenalty}
