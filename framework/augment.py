"""Prompt augmentation: the same question, dressed in different polite words.

A small model trained on ~3 wordings per question learns those exact strings. Showing it
extra copies of each training question with a random polite prefix ("请问", "能说说") or a
different ending ("吗？", "呢？", no punctuation) teaches it that such filler words do not
change the question, so it listens to the words that matter. The answers never change.
Measured on the held-out val rephrasings (teacher recipe, 600 steps): greedy exact match
rose from 5% to 9% and char-F1 from 0.23 to 0.27 (see the README's quality section).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from gptf.data import Sample

PREFIXES = ("", "请问", "请问一下", "能说说", "能不能讲讲", "简单介绍一下", "我想知道", "你知道", "请解释", "告诉我")
SUFFIXES = ("", "？", "?", "吗？", "呢？", "。")
_FINAL_PUNCTUATION = re.compile(r"[？?。！!]+$")


def augment_prompts(samples: Sequence[Sample], copies: int, seed: int) -> list[Sample]:
    """Return the samples plus up to ``copies`` filler-word variants of each (seeded)."""
    rng = random.Random(seed)
    out = list(samples)
    for sample in samples:
        core = _FINAL_PUNCTUATION.sub("", sample.prompt)
        seen = {sample.prompt}
        for _ in range(copies):
            prompt = rng.choice(PREFIXES) + core + rng.choice(SUFFIXES)
            if prompt not in seen:
                seen.add(prompt)
                out.append(Sample(prompt, sample.completion, f"{sample.source} (augmented)"))
    return out
