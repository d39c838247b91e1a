"""The numbers in an answer: a memorised fact with a broken number is a wrong fact.

A small model recalls the words of a taught answer better than its numbers: 五乘以九等于四十五 comes
out as 九乘以九等于二十五, 337万 as 37万. Numbers are found as digits (with a decimal part) or as
two or more Chinese numerals (二十四, 一百); a lone 一 is left out, it is mostly a word (一种, 一个).
Used by the evaluation (every number of the reference must come out whole) and by
:mod:`gptf.decoding.taught_questions` (a taught answer with other numbers was taught for no question).
"""

from __future__ import annotations

import re
from collections import Counter

_NUMBER = re.compile(r"\d+(?:[.．]\d+)?|[零〇一二三四五六七八九十百千万亿两]{2,}")


def numbers_in(text: str) -> list[str]:
    """The numbers of ``text``, in order: ``"约337万参数，2006年"`` -> ``["337", "2006"]``."""
    return _NUMBER.findall(text)


def numbers_intact(answer: str, reference: str) -> bool | None:
    """Every number of ``reference`` appears whole in ``answer`` (None: the reference has none).

    Whole means as a number of its own: "37" inside "337" does not count."""
    wanted = Counter(numbers_in(reference))
    if not wanted:
        return None
    return not wanted - Counter(numbers_in(answer))


def same_numbers(answer: str, taught: str) -> bool:
    """``answer`` has exactly the numbers of ``taught``, as many times each (order aside)."""
    return Counter(numbers_in(answer)) == Counter(numbers_in(taught))
