"""Never generate <pad>, <bos> or <unk>: they are not text, and emitting one would
only end or corrupt the answer."""

from __future__ import annotations

import torch

from gptf import hookimpl
from gptf.interfaces import DecodingConstraint, Tokenizer


class BanSpecialTokens(DecodingConstraint):
    thread_safe = True  # (see DecodingConstraint)

    def __init__(self, tokenizer: Tokenizer, tokens: list[str] = ["<pad>", "<bos>", "<unk>"]) -> None:  # noqa: B006
        known = {
            "<pad>": tokenizer.pad_id,
            "<bos>": tokenizer.bos_id,
            "<unk>": tokenizer.unk_id,
            "<eos>": tokenizer.eos_id,
        }
        unknown = [t for t in tokens if t not in known]
        if unknown:
            raise ValueError(f"unknown special tokens {unknown}; choose from {sorted(known)}")
        self.banned = torch.tensor(sorted({known[t] for t in tokens}), dtype=torch.long)  # built once, not per token

    def adjust_logits(self, logits: torch.Tensor, state: object) -> torch.Tensor:
        return logits.index_fill_(0, self.banned, float("-inf"))


@hookimpl
def register_decoding_constraints() -> dict[str, type]:
    return {"ban_special_tokens": BanSpecialTokens}
