"""Repetition penalty (Keskar et al., 2019): make tokens already in the answer less
likely, which breaks "的的的的" loops. A score s of a repeated token becomes s / p if
positive and s * p if negative (p > 1). Only the answer's tokens count, not the prompt's,
because a good answer often repeats the question's words.

Facts stay facts: tokens that are only digits, punctuation or whitespace are never penalised
(``skip_digits_and_punctuation``, on by default). A number repeats its digits all the time
(337万, 2006年, 1.1), and an answer repeats "，" and "。"; penalising them corrupted facts
("一个约37万参数的GPT" instead of 337万). What a token is made of is read from its bytes
(``tokenizer.token_bytes``): a token that is part of a character, or holds any letter or
Chinese character, is penalised as before.
"""

from __future__ import annotations

import unicodedata

import torch

from gptf import hookimpl
from gptf.interfaces import DecodingConstraint, DecodingState, Tokenizer


def is_digits_or_punctuation(piece: bytes) -> bool:
    """True for a token made only of digits (0-9, ０-９, ...), punctuation and whitespace."""
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError:
        return False  # part of a character: it belongs to a word
    return bool(text) and all(unicodedata.category(ch)[0] in "PZ" or ch.isspace() or ch.isdecimal() for ch in text)


class RepetitionPenalty(DecodingConstraint):
    thread_safe = True  # (see DecodingConstraint)

    def __init__(
        self, tokenizer: Tokenizer, penalty: float = 1.1, skip_digits_and_punctuation: bool = True, ngram: int = 1
    ) -> None:
        if not 0 < penalty < float("inf"):  # (NaN fails this too)
            raise ValueError(f"penalty must be a finite number > 0, got {penalty}")
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.ngram = ngram
        self.tokenizer = tokenizer
        self.penalty = penalty
        self.skip_digits_and_punctuation = skip_digits_and_punctuation
        self._exempt: list[bool] | None = None  # by token id: never penalised (worked out on first use)
        self._tensors = (torch.tensor(float(penalty)), torch.tensor(0.0))  # the penalty and 0, for adjust_logits

    def exempt(self, token_id: int) -> bool:
        """True for a token that is never penalised (digits, punctuation, whitespace)."""
        if self._exempt is None:
            pieces = (self.tokenizer.token_bytes(i) for i in range(self.tokenizer.vocab_size))
            self._exempt = [self.skip_digits_and_punctuation and is_digits_or_punctuation(p) for p in pieces]
        return self._exempt[token_id]

    def repeats(self, ids: list[int]) -> set[int]:
        """The tokens that would repeat: any token of the answer (ngram 1), or the tokens that would
        complete an n-gram the answer already has (ngram n: the last n-1 tokens seen before)."""
        if self.ngram == 1:
            return set(ids)
        n = self.ngram
        if len(ids) < n:
            return set()
        tail = tuple(ids[len(ids) - n + 1 :])
        return {ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == tail}

    def adjust_logits(self, logits: torch.Tensor, state: DecodingState) -> torch.Tensor:
        if self.penalty == 1.0 or not state.new_ids:
            return logits
        penalised = [t for t in self.repeats(state.new_ids) if not self.exempt(t)]
        if not penalised:
            return logits
        seen = torch.tensor(penalised, dtype=torch.long)
        scores = logits.index_select(0, seen)
        # (the penalty as a 0-dim tensor: the same numbers as with the Python float, in half the time)
        penalty, zero = self._tensors
        return logits.index_copy_(0, seen, torch.where(scores > zero, scores / penalty, scores * penalty))


@hookimpl
def register_decoding_constraints() -> dict[str, type]:
    return {"repetition_penalty": RepetitionPenalty}
