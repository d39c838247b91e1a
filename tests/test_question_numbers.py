"""Numbers in questions are compared as values (gptf.decoding.numbers.question_terms)."""

from __future__ import annotations

import pytest

from gptf.decoding.char_bags import CharBags, rarity_weights
from gptf.decoding.numbers import chinese_number, is_number_term, question_terms
from gptf.decoding.taught_questions import NUMBER_WEIGHT, TaughtQuestions


@pytest.mark.parametrize(
    ("numeral", "value"),
    [
        ("七", 7),
        ("两", 2),
        ("十", 10),
        ("十五", 15),
        ("三十六", 36),
        ("一百零八", 108),
        ("两千零五", 2005),
        ("三百二十", 320),
        ("一万二千三百", 12300),
        ("一亿两千万", 120_000_000),
        ("二〇二四", 2024),  # three or more bare digits: read digit by digit, as a year
        ("七七", None),  # two numbers (七七四十九), not 77
        ("八九", None),  # eight or nine
        ("二十三百", None),  # units must go down
        ("五十五十", None),
        ("万", None),
        ("", None),
        ("七个", None),
    ],
)
def test_chinese_numerals_read_as_values(numeral: str, value: int | None) -> None:
    assert chinese_number(numeral) == value


def test_a_question_compares_by_its_characters_and_its_numbers_as_values() -> None:
    assert question_terms("七的平方是多少？") == ["#7", "的", "平", "方", "是", "多", "少"]
    assert question_terms("7的平方是多少") == question_terms("七的平方是多少")
    assert question_terms("３６加48") == ["#36", "加", "#48"]  # full-width digits too
    assert question_terms("三十六加上四十八") == ["#36", "加", "上", "#48"]
    assert question_terms("七七四十几") == ["#7", "#7", "#40", "几"]  # split where a numeral follows a numeral
    assert question_terms("两个7相乘") == ["#2", "个", "#7", "相", "乘"]
    assert question_terms("3.5米") == ["#3.5", "米"]
    assert question_terms("007号") == ["#7", "号"] and question_terms("٣٦") == ["#36"]  # Arabic-Indic digits too
    assert question_terms("1" * 5000) == ["#" + "1" * 5000]  # any length (int() would refuse 4300+ digits)
    assert question_terms("七" * 5000) == ["#7"] * 5000  # no number that long in numerals: each a 7
    assert question_terms("二十三百") == ["二", "十", "三", "百"]  # no number: characters as written
    # a lone 一 is mostly a word (一下, 一种): a character; in a longer numeral it is a digit
    assert question_terms("讲一下") == ["讲", "一", "下"]
    assert question_terms("十一") == ["#11"]
    assert question_terms("  ，。") == []
    assert [is_number_term(t) for t in ["#7", "#", "七", "#3.5"]] == [True, False, False, True]


MUL_7_7 = "七乘以七等于四十九，也就是7×7=49。"
MUL_8_8 = "八乘以八等于六十四，也就是8×8=64。"
MUL_5_9 = "五乘以九等于四十五，也就是5×9=45。"
MUL_8_9 = "八乘以九等于七十二，也就是8×9=72。"
PAIRS = [
    ("7的平方等于多少", MUL_7_7),
    ("8的平方是多少", MUL_8_8),
    ("5乘以9得几", MUL_5_9),
    ("八乘以九是多少？", MUL_8_9),
    ("高压锅为什么煮东西快", "高压锅密封后锅内气压升高，水的沸点超过100℃，所以食物熟得快。"),
]


def test_the_taught_question_with_the_same_numbers_is_the_closest() -> None:
    taught = TaughtQuestions(PAIRS)
    # character by character, 七的平方是多少 shares 的平方是多少 with 8's question and only 的平方 with 7's
    plain = CharBags([q for q, _ in PAIRS], rarity_weights(q for q, _ in PAIRS))
    assert int(plain.f1("七的平方是多少").argmax()) == 1
    assert taught.closest_question("七的平方是多少")[0] == "7的平方等于多少"
    assert taught.closest_answers("七的平方是多少", 1)[0] == [taught.answers.index(MUL_7_7)]
    # 五乘以九是多少 shares 乘以 and 是多少 with 8x9's question (八乘以九是多少); its numbers are 5x9's
    assert int(plain.f1("五乘以九是多少").argmax()) == 3
    assert taught.closest_question("5乘以9是多少")[0] == "5乘以9得几"
    assert taught.closest_question("五乘以九是多少")[0] == "5乘以9得几"
    assert taught.closest_question("压力锅为啥快")[0] == "高压锅为什么煮东西快"  # questions without numbers as before


def test_a_number_weighs_twice_a_character_as_rare() -> None:
    """The weighted char F1, written out: a shared number counts NUMBER_WEIGHT x its rarity."""
    questions = [q for q, _ in PAIRS]
    rarity = rarity_weights(questions, question_terms)
    taught = TaughtQuestions(PAIRS)

    def weight(term: str) -> float:
        return rarity(term) * (NUMBER_WEIGHT if is_number_term(term) else 1.0)

    asked, closest = question_terms("七的平方是多少"), question_terms("7的平方等于多少")
    common = sum(weight(t) for t in set(asked) & set(closest))  # no term twice in either
    expected = 2 * common / (sum(map(weight, asked)) + sum(map(weight, closest)))
    assert taught.closest_question("七的平方是多少")[2] == pytest.approx(expected)
    assert NUMBER_WEIGHT == 2.0
