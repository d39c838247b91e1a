"""Texts as bags of characters (gptf.decoding.char_bags): char F1 with many texts at once."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from gptf.decoding.char_bags import CharBags, rarity_weights
from gptf.evaluate import char_f1
from gptf.interfaces import content_chars

TEXTS = [
    "高压锅密封后气压升高，水的沸点升高，煮得快。",
    "阳光里的蓝光被空气散射得最多，所以天空是蓝的。",
    "注意力机制按相关程度给输入的各个部分分配权重。",
    "",  # no characters at all
    "！？。",  # punctuation only: no characters that count either
    "Attention 让模型看重 most useful 的信息",
]


def texts_to_ask(seed: int) -> list[str]:
    """The texts themselves, a few others, and 40 pieces of two texts glued together and shuffled."""
    rng = random.Random(seed)
    asked = [*TEXTS, "高压锅", "蓝蓝蓝蓝", "完全不同的字", "xyz"]
    for _ in range(40):
        a, b = rng.choice(TEXTS), rng.choice(TEXTS)
        glued = list(a[: rng.randint(0, len(a))] + b[rng.randint(0, len(b)) :])
        rng.shuffle(glued)
        asked.append("".join(glued))
    return asked


def test_f1_equals_char_f1_of_each_pair() -> None:
    bags = CharBags(TEXTS)
    for text in texts_to_ask(0):
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


def weighted_char_f1(a: str, b: str, weight) -> float:
    """The weighted formula written out, pair by pair: 2·Σ w·common / (Σ w·len(a) + Σ w·len(b))."""
    bag_a, bag_b = Counter(content_chars(a)), Counter(content_chars(b))
    common = sum(min(n, bag_b[ch]) * weight(ch) for ch, n in bag_a.items())
    total = sum(n * weight(ch) for ch, n in bag_a.items()) + sum(n * weight(ch) for ch, n in bag_b.items())
    return 2 * common / total if total > 0 else 1.0


def test_weighted_f1_equals_the_formula_written_out() -> None:
    weight = rarity_weights(TEXTS)
    bags = CharBags(TEXTS, weight)
    for text in texts_to_ask(1):
        scores = bags.f1(text).tolist()
        assert scores == pytest.approx([weighted_char_f1(text, t, weight) for t in TEXTS], abs=1e-12), text


def test_rare_characters_count_more_than_ones_every_question_has() -> None:
    questions = ["高压锅为什么煮饭快", "天空为什么是蓝的", "海水为什么是咸的", "为什么会打雷"]
    weight = rarity_weights(questions)
    assert weight("为") < weight("是") < weight("锅") < weight("龙")  # in 4, 2, 1 and 0 of the 4 questions
    assert weight("为") == pytest.approx(math.log(1 + 0.5 / 4.5))
    bags, plain = CharBags(questions, weight), CharBags(questions)
    # 锅为什么这么重 shares 锅为什么 with the first question, 为什么 with all: the rare 锅 decides
    assert bags.closest("锅为什么这么重")[0] == [0]
    # a question about something else shares only the words every question has: unweighted, that
    # still looks like a question of the data; weighted, hardly
    unrelated = "股票为什么会涨"
    assert float(bags.f1(unrelated).max()) < 0.5 * float(plain.f1(unrelated).max())
