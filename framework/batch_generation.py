"""Greedy answers to many prompts at once, for evaluation.

Answering 200 questions one by one runs the model 200 × ~40 times on a single token,
and a small model spends most of that time on per-call overhead, not arithmetic. Here
prompts of the *same token length* share a batch: they need no padding (so no attention
mask and no position shifts), the KV cache simply holds one row per prompt, and each step
runs the model once for the whole batch. Every row goes through the same decoding
constraints as :meth:`gptf.generation.Generator.generate` and picks its most likely token,
so the answers are the same as one-by-one greedy decoding (a test checks this).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import torch

from gptf.errors import GptfError
from gptf.generation import DecodingState, Generator, clean_answer
from gptf.kv_cache import KVCache


@attrs.frozen
class BatchAnswer:
    text: str  # cleaned, as Generation.text
    tokens: int


def group_by_length(rows: Sequence[list[int] | None], batch_size: int) -> list[list[int]]:
    """Indices of ``rows`` grouped by length, at most ``batch_size`` per group (None rows skipped)."""
    by_length: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        if row is not None:
            by_length.setdefault(len(row), []).append(index)
    groups = []
    for _, indices in sorted(by_length.items()):
        groups += [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return groups


@torch.inference_mode()
def greedy_batch(generator: Generator, rows: list[list[int]], max_new_tokens: int) -> list[BatchAnswer]:
    """Greedy answers for prompts of equal length ``rows`` (token ids, <bos> first)."""
    model, tokenizer, config = generator.model, generator.tokenizer, generator.config
    length = len(rows[0])
    budget = min(max_new_tokens, config.seq_len - length)
    states = [DecodingState(tokenizer, row, budget=budget) for row in rows]
    finished = [False] * len(rows)
    cache = KVCache(
        config.n_layer, len(rows), config.n_kv_head, config.seq_len, config.head_dim, device=generator.device
    )
    feed = torch.tensor(rows, device=generator.device)  # (B, T)
    for _ in range(budget):
        logits = model(feed, cache)[:, -1].float().cpu()  # (B, V): the next-token scores of every row
        chosen = []
        for row, state in enumerate(states):
            token = tokenizer.eos_id  # a finished row keeps being fed <eos>; its output is ignored
            if not finished[row]:
                scores = logits[row]
                for constraint in generator.constraints:
                    scores = constraint.adjust_logits(scores, state)
                token = int(torch.argmax(scores))
                if token == tokenizer.eos_id:
                    finished[row] = True
                else:
                    state.new_ids.append(token)
                    finished[row] = any(c.should_stop(state) for c in generator.constraints)
            chosen.append(token)
        if all(finished):
            break
        feed = torch.tensor(chosen, device=generator.device).unsqueeze(1)  # (B, 1)
    return [BatchAnswer(clean_answer(state.text), len(state.new_ids)) for state in states]


def greedy_answers(
    generator: Generator,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> list[BatchAnswer]:
    """Greedy answers in the order of ``prompts``. A prompt that leaves no room to answer gets ""."""
    rows: list[list[int] | None] = []
    for prompt in prompts:
        try:
            rows.append(generator.prompt_ids(prompt))
        except GptfError:
            rows.append(None)
    answers = [BatchAnswer("", 0)] * len(prompts)
    done = rows.count(None)
    for group in group_by_length(rows, batch_size):
        batch = greedy_batch(generator, [rows[i] for i in group], max_new_tokens)  # type: ignore[misc]
        for index, answer in zip(group, batch, strict=True):
            answers[index] = answer
        done += len(group)
        if on_progress is not None:
            on_progress(done)
    return answers
