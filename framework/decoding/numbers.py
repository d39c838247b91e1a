"""The numbers in an answer: a memorised fact with a broken number is a wrong fact.

A small model recalls the words of a taught answer better than its numbers: 五乘以九等于四十五 comes
out as 九乘以九等于二十五, 337万 as 37万. Numbers are found as digits (with a decimal part) or as
two or more Chinese numerals (二十四, 一百); a lone 一 is left out, it is mostly a word (一种, 一个).
Used by the evaluation (every number of the reference must come out whole) and by
:mod:`gptf.decoding.taught_questions` (a taught answer with other numbers was taught for no question).

Questions are compared with numbers read as their values (:func:`question_terms`): 七的平方 asks what
7的平方 asks, and 48 is one thing, not a 4 and an 8. Character by character, 九的平方是多少 looked more
like 8的平方是多少 than like 9的平方等于多少.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from gptf.interfaces import content_chars

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


# Numbers in a question: digits (with a decimal part), two or more Chinese numerals, or one numeral other
# than 一 (七的平方, 两个7; a lone 一 is mostly a word: 一下, 一种).
_QUESTION_NUMBER = re.compile(r"\d+(?:[.．]\d+)?|[零〇一二两三四五六七八九十百千万亿]{2,}|[零〇二两三四五六七八九十]")
_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100, "千": 1000}
_GROUPS = {"万": 10_000, "亿": 100_000_000}
_NUMERALS = {*_DIGITS, *_UNITS, *_GROUPS}


def chinese_number(numeral: str) -> int | None:
    """The value of one Chinese numeral: 三十六 -> 36, 十五 -> 15, 两千零五 -> 2005, 一万二千 -> 12000,
    二〇二四 -> 2024 (three or more digits read digit by digit, as years are). None where it is not one
    number: 七七 (seven sevens), 八九 (eight or nine), 五十五十.

    >>> chinese_number("三十六"), chinese_number("十五"), chinese_number("二〇二四"), chinese_number("七七")
    (36, 15, 2024, None)
    """
    if not numeral or any(ch not in _NUMERALS for ch in numeral):
        return None
    if all(ch in _DIGITS for ch in numeral):
        if len(numeral) == 2 or len(numeral) > 18:  # (longer: no year, and int() refuses 4300+ digits)
            return None
        return int("".join(str(_DIGITS[ch]) for ch in numeral))
    total = section = 0
    digit: int | None = None
    unit = 10**9  # units go down within a group: 三百二十, not 二十三百
    for ch in numeral:
        if ch in ("零", "〇"):  # a gap (两千零五): nothing to add
            if digit is not None:
                return None
        elif ch in _DIGITS:
            if digit is not None:
                return None
            digit = _DIGITS[ch]
        elif ch in _UNITS:
            if _UNITS[ch] >= unit:
                return None
            section += (1 if digit is None else digit) * _UNITS[ch]
            digit, unit = None, _UNITS[ch]
        else:
            if digit is None and section == 0:
                return None
            total += (section + (digit or 0)) * _GROUPS[ch]
            section, digit, unit = 0, None, 10**9
    return total + section + (digit or 0)


def _terms_of_number(number: str) -> list[str]:
    """The terms of one run of digits or numerals: each value as ``"#<digits>"``: ``"48"`` -> ``["#48"]``,
    ``"七七四十"`` -> ``["#7", "#7", "#40"]`` (split where a numeral follows a numeral); what still reads as no
    number stays as its characters (``"二十三百"``)."""
    if number[0] not in _NUMERALS:
        # any script's digits as ASCII (３６, ٣٦), without leading zeros; never int(): a number may be any length
        whole, _, part = "".join(str(unicodedata.digit(ch, ch)) for ch in number).replace("．", ".").partition(".")
        return [f"#{whole.lstrip('0') or '0'}" + (f".{part}" if part else "")]
    value = chinese_number(number)
    if value is not None:
        return [f"#{value}"]
    pieces, piece = [], ""
    for ch in number:
        if piece and ch in _DIGITS and piece[-1] in _DIGITS:
            pieces.append(piece)
            piece = ""
        piece += ch
    pieces.append(piece)
    terms: list[str] = []
    for part in pieces:
        value = chinese_number(part)
        terms += [f"#{value}"] if value is not None else list(part)
    return terms


def is_number_term(term: str) -> bool:
    """Whether a term of :func:`question_terms` is a number (``"#7"``) rather than a character."""
    return term.startswith("#") and len(term) > 1


def question_terms(question: str) -> list[str]:
    """The content characters of ``question``, each number one term, its value (``"#7"``), however it is
    written: 7, 七, ７ (questions are compared by these, with Latin words made whole:
    :func:`gptf.decoding.taught_questions.comparison_terms`).

    >>> question_terms("七的平方是多少"), question_terms("36再加上48")
    (['#7', '的', '平', '方', '是', '多', '少'], ['#36', '再', '加', '上', '#48'])
    """
    terms: list[str] = []
    start = 0
    for match in _QUESTION_NUMBER.finditer(question):
        terms += content_chars(question[start : match.start()])
        terms += _terms_of_number(match.group())
        start = match.end()
    return terms + list(content_chars(question[start:]))
