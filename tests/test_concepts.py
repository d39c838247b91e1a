"""gptf eval's wording-independent scores: which concept an answer is about, and numbers intact."""

from __future__ import annotations

from gptf.data import Sample
from gptf.decoding.numbers import numbers_in, numbers_intact
from gptf.evaluate import ConceptIndex, sample_concept, score_answer
from gptf.interfaces import DECLINE_TEXT

ROPE = "RoPE用旋转把位置信息放进查询和键里。"
ATTENTION = "注意力让每个词按相关程度参考前面的词。"
IDENTITY = "我是gptf从零训练的中文教学小模型，一个约337万参数的GPT。"
SAMPLES = [
    Sample("什么是RoPE？", ROPE, concept="rope"),
    Sample("旋转位置编码是什么", ROPE, concept="rope"),
    Sample("什么是注意力机制？", ATTENTION, concept="attention"),
    Sample("你是谁", IDENTITY, concept="identity"),
    Sample("今天股票会涨吗", DECLINE_TEXT, concept="out_of_scope_finance"),
    Sample("明天会下雨吗", DECLINE_TEXT, concept="out_of_scope_weather"),
]


def test_right_concept_in_other_words_declined_and_wrong() -> None:
    index = ConceptIndex(SAMPLES)
    assert len(index) == 4  # reference answers, deduplicated
    rope = "rope"
    # right: other wording, same idea (closest reference is RoPE's)
    assert index.check("RoPE把位置信息用旋转放进查询和键。", rope).verdict == "right"
    # wrong: a fluent answer about another concept
    check = index.check(ATTENTION, rope)
    assert (check.verdict, check.concept) == ("wrong", "attention")
    # wrong: nonsense close to no reference at all
    assert index.check("蓝天白云小河流水", rope).verdict == "wrong"
    assert index.check("蓝天白云小河流水", rope).concept == ""
    # declined: the decline text (final punctuation does not matter), or the filter fired
    assert index.check("这个问题我还没有学过", rope).verdict == "declined"
    assert index.check(ROPE, rope, declined=True).verdict == "declined"


def test_a_shared_reference_stands_for_every_concept_it_answers() -> None:
    index = ConceptIndex(SAMPLES, decline_texts=["我不知道。"])  # the data's fixed answer is now just an answer
    assert index.check(DECLINE_TEXT, "out_of_scope_weather").verdict == "right"
    assert index.check(DECLINE_TEXT, "out_of_scope_finance").verdict == "right"
    assert index.check(DECLINE_TEXT, "rope").verdict == "wrong"
    assert index.check("我不知道", "rope").verdict == "declined"


def test_without_a_concept_field_the_reference_answer_is_the_concept() -> None:
    plain = [Sample("什么是RoPE？", ROPE), Sample("什么是注意力机制？", ATTENTION)]
    assert sample_concept(plain[0]) == "RoPE用旋转把位置信息放进查询和键里"  # normalised: no final 。
    index = ConceptIndex(plain)
    assert index.check("RoPE用旋转把位置放进查询和键", sample_concept(plain[0])).verdict == "right"
    assert index.check(ATTENTION, sample_concept(plain[0])).verdict == "wrong"
    score = score_answer(plain[0], ATTENTION, concepts=index)
    assert score.verdict == "wrong" and score.concept == sample_concept(plain[0])


def test_numbers_are_found_whole() -> None:
    assert numbers_in("一个约337万参数的GPT，2006年，13.5MB，二十四节气，一种方法") == [
        "337",
        "2006",
        "13.5",
        "二十四",
    ]
    assert numbers_intact("一个约337万参数的GPT", IDENTITY) is True
    assert numbers_intact("一个约37万参数的GPT", IDENTITY) is False  # 37 is inside 337, but not 337
    assert numbers_intact("一个约3370万参数的GPT", IDENTITY) is False
    assert numbers_intact("冥王星206年被降级", "冥王星2006年被降级") is False
    assert numbers_intact("任何回答", ROPE) is None  # nothing to check
    assert numbers_intact("二十四节气", "一年有二十四节气") is True


def test_score_answer_records_concept_numbers_and_the_filter() -> None:
    from gptf.generate import BatchAnswer

    index = ConceptIndex(SAMPLES)
    sample = SAMPLES[3]
    broken = score_answer(sample, "我是gptf从零训练的中文教学小模型，一个约37万参数的GPT。", concepts=index)
    assert broken.verdict == "right" and broken.numbers_intact is False
    declined = BatchAnswer(DECLINE_TEXT, 5, -2.5, True, IDENTITY, None)
    score = score_answer(sample, declined, concepts=index)
    assert score.verdict == "declined" and score.model_verdict == "right" and score.confidence == -2.5
    assert score.answer == DECLINE_TEXT and score.model_answer == IDENTITY and score.declined


def test_questions_on_taught_topics_and_out_of_scope_ones_are_counted_apart() -> None:
    """An out-of-scope question's reference is the decline, so declining it is its right answer (the model's
    own decline or the filter's); a question on a taught topic that got no answer is declined. The report
    also gives right concept on the questions about taught topics and the out-of-scope ones declined."""
    from gptf.evaluate import SplitReport, scope_lines
    from gptf.generate import BatchAnswer

    index = ConceptIndex(SAMPLES)
    answers = [
        score_answer(SAMPLES[0], ROPE, concepts=index),  # in scope, right
        score_answer(SAMPLES[2], ROPE, concepts=index),  # in scope, wrong (the RoPE answer to attention)
        score_answer(SAMPLES[3], DECLINE_TEXT, concepts=index),  # in scope, declined
        score_answer(SAMPLES[4], DECLINE_TEXT, concepts=index),  # out of scope, declined: its right answer
        score_answer(SAMPLES[5], ATTENTION, concepts=index),  # out of scope, answered anyway: wrong
        # out of scope, the model answered, the answer filter declined: right too
        score_answer(SAMPLES[5], BatchAnswer(DECLINE_TEXT, 5, -3.0, True, ROPE, None), concepts=index),
    ]
    assert [a.out_of_scope for a in answers] == [False, False, False, True, True, True]
    assert [a.verdict for a in answers] == ["right", "wrong", "declined", "right", "wrong", "right"]
    assert answers[5].model_verdict == "wrong"  # what the filter replaced was about RoPE
    report = SplitReport("val", "generalisation", "val.jsonl", 6, answers, 0.0, 1.0)
    assert report.right_concept == 3 / 6  # overall: the out-of-scope questions count too
    assert (report.declined, report.wrong_concept) == (1 / 6, 2 / 6)
    assert report.in_scope_right == (1 / 3, 3)
    assert report.out_of_scope_declined == (2 / 3, 3)
    summary = report.summary()
    assert (summary["in_scope"], summary["in_scope_right_concept"]) == (3, 0.3333)
    assert (summary["out_of_scope"], summary["out_of_scope_declined"]) == (3, 0.6667)
    assert scope_lines([report]) == [
        "val: right concept 33.3% of the 3 questions on taught topics; 66.7% of the 3 out-of-scope questions "
        "declined (right: their reference declines)"
    ]
    unchecked = SplitReport("val", "generalisation", "val.jsonl", 1, [score_answer(SAMPLES[0], ROPE)], 0.0, 1.0)
    assert unchecked.in_scope_right == (None, 0) and scope_lines([unchecked]) == []
