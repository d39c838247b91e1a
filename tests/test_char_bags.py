"""Texts as bags of characters (gptf.decoding.char_bags): char F1 with many texts at once."""

from __future__ import annotations

import random

import pytest

from gptf.decoding.char_bags import CharBags
from gptf.evaluate import char_f1

TEXTS = [
    "高压锅密封后气压升高，水的沸点升高，煮得快。",
    "阳光里的蓝光被空气散射得最多，所以天空是蓝的。",
    "注意力机制按相关程度给输入的各个部分分配权重。",
    "",  # no characters at all
    "！？。",  # punctuation only: no characters that count either
    "Attention 让模型看重 most useful 的信息",
]


def test_f1_equals_char_f1_of_each_pair() -> None:
    bags = CharBags(TEXTS)
    rng = random.Random(0)
    asked = [*TEXTS, "高压锅", "蓝蓝蓝蓝", "完全不同的字", "xyz"]
    for _ in range(40):  # pieces of two texts glued together, and shuffled
        a, b = rng.choice(TEXTS), rng.choice(TEXTS)
        glued = list(a[: rng.randint(0, len(a))] + b[rng.randint(0, len(b)) :])
        rng.shuffle(glued)
        asked.append("".join(glued))
    for text in asked:
        scores = bags.f1(text).tolist()
        assert scores == pytest.approx([char_f1(text, t) for t in TEXTS], abs=1e-12), text


def test_characters_are_counted_with_multiplicity() -> None:
    bags = CharBags(["蓝蓝天", "蓝天天天"])
    # 蓝蓝蓝 vs 蓝蓝天: 2 in common, 2*2/(3+3); vs 蓝天天天: 1 in common, 2*1/(3+4)
    assert bags.f1("蓝蓝蓝").tolist() == pytest.approx([4 / 6, 2 / 7])


def test_closest_returns_every_tied_row_in_order() -> None:
    bags = CharBags(["天空", "空天", "海洋"])
    assert bags.closest("天空很蓝") == ([0, 1], pytest.approx(2 * 2 / 6))
    assert bags.closest("海") == ([2], pytest.approx(2 / 3))
    assert bags.closest("山") == ([], 0.0)  # nothing in common with any of them
    assert bags.closest("，") == ([], 0.0)  # no character that counts: F1 0 with every non-empty text


def test_two_empty_texts_are_the_same_and_no_texts_is_nothing() -> None:
    bags = CharBags(["", "蓝天"])
    assert bags.f1("？").tolist() == [1.0, 0.0]  # both without characters: alike, as char_f1 says
    assert bags.closest("。") == ([0], 1.0)
    assert len(CharBags([])) == 0
    assert CharBags([]).closest("蓝天") == ([], 0.0)
