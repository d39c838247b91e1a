"""Generating an answer, one token at a time.

Each step: run the model on the newest token (the KV cache remembers the rest), let the
decoding constraints adjust the scores, then pick the next token:

* temperature 0  -> greedy: always the most likely token (deterministic);
* temperature T  -> sample from softmax(logits / T): higher T, more adventurous;
* top-k          -> only the k most likely tokens may be sampled;
* top-p          -> only the smallest set of tokens whose probabilities sum to p.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import torch

from gptf.data import format_prompt
from gptf.devices import model_device
from gptf.errors import GptfError
from gptf.kv_cache import KVCache

if TYPE_CHECKING:
    from gptf.interfaces import DecodingConstraint, Tokenizer
    from gptf.model import GPT

_LEADING_JUNK = re.compile(r"^[\s,.;:!?，。；：！？、·…—\-\"'“”‘’()（）]+")


def clean_answer(text: str) -> str:
    """Trim leading punctuation/whitespace and trailing whitespace, as in the seed."""
    return _LEADING_JUNK.sub("", text).rstrip()


@attrs.frozen
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0


@attrs.define
class DecodingState:
    """What a decoding constraint may look at."""

    tokenizer: Tokenizer
    prompt_ids: list[int]
    new_ids: list[int] = attrs.field(factory=list)
    budget: int | None = None  # the most new tokens this answer may have (None: unknown)

    @property
    def text(self) -> str:
        """The answer so far, decoded."""
        return self.tokenizer.decode(self.new_ids)


@attrs.frozen
class TokenChoice:
    token_id: int
    piece: str  # the token's text ("" for a partial character)
    probability: float


@attrs.frozen
class Generation:
    prompt: str
    text: str  # the cleaned answer
    raw_text: str
    tokens: list[TokenChoice]
    stop_reason: str  # "eos", "stop", "max_new_tokens", "seq_len"
    first_token_s: float
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.total_s if self.total_s > 0 else 0.0


class Generator:
    """Answers prompts with a trained model (fp32 or quantized)."""

    def __init__(
        self,
        model: GPT | torch.nn.Module,
        tokenizer: Tokenizer,
        constraints: Sequence[DecodingConstraint] = (),
        *,
        use_cache: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.constraints = list(constraints)
        self.use_cache = use_cache
        self.config = model.config
        self.device = model_device(model)

    def prompt_ids(self, prompt: str) -> list[int]:
        if not prompt.strip():
            raise GptfError('the prompt is empty: ask a question, e.g. --prompt "什么是注意力机制？"')
        ids = [self.tokenizer.bos_id, *self.tokenizer.encode(format_prompt(prompt))]
        if len(ids) >= self.config.seq_len:
            raise GptfError(
                f"the prompt is {len(ids)} tokens long, which leaves no room to answer "
                f"(model.seq_len={self.config.seq_len}); ask a shorter question"
            )
        return ids

    @torch.inference_mode()
    def generate(
        self, prompt: str, settings: SamplingSettings, seed: int | None = None, *, context_ids: list[int] | None = None
    ) -> Generation:
        """Answer ``prompt``; ``context_ids`` replaces the templated prompt (e.g. a multi-turn chat)."""
        ids = self.prompt_ids(prompt) if context_ids is None else list(context_ids)
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        budget = min(settings.max_new_tokens, self.config.seq_len - len(ids))
        state = DecodingState(self.tokenizer, ids, budget=budget)
        cache = self._new_cache() if self.use_cache else None
        tokens: list[TokenChoice] = []
        stop_reason = "max_new_tokens" if budget == settings.max_new_tokens else "seq_len"
        start = time.perf_counter()
        first_token_s = 0.0
        feed = torch.tensor([ids], device=self.device)
        for _ in range(budget):
            if cache is not None:
                logits = self.model(feed, cache)
            else:
                logits = self.model(torch.tensor([ids + state.new_ids], device=self.device))
            scores = logits[0, -1].float().cpu()  # constraints and sampling work on the CPU
            for constraint in self.constraints:
                scores = constraint.adjust_logits(scores, state)
            token, probability = pick_token(scores, settings, rng)
            if not tokens and first_token_s == 0.0:
                first_token_s = time.perf_counter() - start
            if token == self.tokenizer.eos_id:
                stop_reason = "eos"
                break
            state.new_ids.append(token)
            tokens.append(TokenChoice(token, self.tokenizer.decode([token]), probability))
            if any(c.should_stop(state) for c in self.constraints):
                stop_reason = "stop"
                break
            feed = torch.tensor([[token]], device=self.device)
        total = time.perf_counter() - start
        raw = state.text
        return Generation(prompt, clean_answer(raw), raw, tokens, stop_reason, first_token_s, total)

    def _new_cache(self) -> KVCache:
        c = self.config
        return KVCache(c.n_layer, 1, c.n_kv_head, c.seq_len, c.head_dim, device=self.device)


def pick_token(scores: torch.Tensor, settings: SamplingSettings, rng: torch.Generator | None) -> tuple[int, float]:
    """Choose the next token from (V,) scores; return it and its probability."""
    if settings.temperature <= 0:
        probs = torch.softmax(scores, dim=-1)
        token = int(torch.argmax(scores))
        return token, float(probs[token])
    scores = scores / settings.temperature
    if settings.top_k > 0:
        kth = torch.topk(scores, min(settings.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        # drop a token once the tokens *before* it already reach top_p
        drop = cumulative - torch.softmax(sorted_scores, dim=-1) >= settings.top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    token = int(torch.multinomial(probs, 1, generator=rng))
    return token, float(probs[token])
