"""The answer filter's taught_question measures: does the question look like the questions the
answer was taught for? (gptf.decoding.taught_questions)"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import invoke

from gptf.decoding.char_bags import CharBags, rarity_weights
from gptf.decoding.taught_questions import QUESTION_SIMILARITY, TaughtQuestions, comparison_terms
from gptf.errors import GptfError
from gptf.generate import Generator, SamplingSettings, greedy_answers
from gptf.interfaces import TAUGHT_WEIGHT, FinishedAnswer
from gptf.run import load_run
from gptf.train.fingerprints import refresh_fingerprint
from gptf.train.run_files import RunFiles

PRESSURE = "高压锅密封后气压升高，水的沸点升高，煮得快。"
SKY = "阳光里的蓝光被空气散射得最多，所以天空是蓝的。"
TAUGHT = TaughtQuestions(
    [
        ("高压锅为什么煮东西快", PRESSURE),
        ("压力锅煮饭为啥快", PRESSURE),
        ("天空为什么是蓝色的", SKY),
    ]
)


def test_a_latin_word_is_one_word_in_any_case() -> None:
    """Students type rope, RoPE or ROPE; letter by letter in the lesson's case, rope shared more with
    dropout (r, o, p) than with RoPE (o)."""
    assert comparison_terms("rope是什么") == comparison_terms("RoPE是什么") == comparison_terms("ROPE是什么")
    assert comparison_terms("GPT-2和kv cache") == ["gpt", "g", "p", "t", "#2", "和", "kv", "k", "v", "cache", *"cache"]
    rope, dropout = "RoPE把位置编码成向量的旋转角度。", "dropout在训练时随机把一部分神经元置零。"
    taught = TaughtQuestions([("什么是RoPE", rope), ("RoPE有什么用", rope), ("什么是dropout", dropout)])
    for asked in ("rope是什么", "ROPE是什么", "什么是 RoPE"):
        assert taught.closest_question(asked)[1] == taught.answers.index(rope), asked  # type: ignore[index]


def test_a_taught_answer_with_other_numbers_was_taught_for_no_question() -> None:
    """A misremembered number makes a taught sentence a wrong fact: similarity 0, whatever the question."""
    five_nines = "五乘以九等于四十五，也就是5×9=45。"
    taught = TaughtQuestions([("5乘以9是几", five_nines), ("五九得几", five_nines), ("天空为什么是蓝色的", SKY)])
    assert taught.similarity("5乘以9等于几", five_nines) > 0.6  # the taught answer itself
    assert taught.similarity("5乘以9等于几", "五乘以九等于二十五，也就是5×9=25。") == 0.0  # other numbers
    assert taught.similarity("5乘以9等于几", "五乘以九等于四十五。") == 0.0  # numbers dropped: not as taught
    assert taught.similarity("5乘以9等于几", "五乘以九等于四十五，也就是9×5=45。") > 0.6  # the same numbers, reordered
    assert taught.similarity("天空为啥是蓝的", SKY) > 0.5  # answers without numbers are unaffected


def test_similarity_is_to_the_closest_question_of_the_closest_taught_answer() -> None:
    assert len(TAUGHT) == 2
    assert TAUGHT.closest_answer("高压锅密封后气压升高") == 0  # part of the first answer: that one
    assert TAUGHT.closest_answer("！？") == -1  # nothing in common with anything taught
    # char F1 with each character weighted by its rarity among the 3 taught questions (tests/test_char_bags.py
    # checks the weighted F1 against the formula written out): the closer of the pressure cooker's two
    weight = rarity_weights(["高压锅为什么煮东西快", "压力锅煮饭为啥快", "天空为什么是蓝色的"])
    pressure = CharBags(["高压锅为什么煮东西快", "压力锅煮饭为啥快"], weight).f1("压力锅为什么快")
    assert TAUGHT.similarity("压力锅为什么快", "高压锅密封后气压升高") == pytest.approx(float(pressure.max()))
    assert TAUGHT.similarity("压力锅为什么快", "高压锅密封后气压升高") > 0.5
    # the same question, but the model answered about the sky: it shares only 为什么 with the sky's question,
    # words 2 of the 3 taught questions have, so it looks even less alike than unweighted char F1 says
    sky = TAUGHT.similarity("压力锅为什么快", SKY)
    assert sky == pytest.approx(float(CharBags(["天空为什么是蓝色的"], weight).f1("压力锅为什么快").max()))
    assert sky < 2 * 3 / (7 + 9)  # unweighted: 为什么 in common, 2*3/(7+9) = 0.375
    assert sky < 0.5 * TAUGHT.similarity("压力锅为什么快", "高压锅密封后气压升高")
    assert TAUGHT.similarity("天空为什么是蓝色的", SKY) == 1.0  # a taught question itself
    assert TAUGHT.similarity("压力锅为什么快", "！？") == 0.0
    assert TaughtQuestions([]).similarity("压力锅为什么快", PRESSURE) == 0.0


def test_the_taught_measures_by_hand() -> None:
    answer = FinishedAnswer("q", "a", (1, 2), (-0.5, -1.5), (0.1, 0.2), taught_similarity=0.25)
    assert answer.measure("taught_question") == 0.25
    assert answer.measure("min_logprob_taught") == pytest.approx(-1.5 + TAUGHT_WEIGHT * 0.25)
    unknown = FinishedAnswer("q", "a", (1, 2), (-0.5, -1.5), (0.1, 0.2))  # no training questions known
    assert unknown.measure("taught_question") == -math.inf
    assert unknown.measure("min_logprob_taught") == -math.inf
    assert unknown.measure("min_logprob") == -1.5  # the others do not need them


def test_the_generator_measures_each_answer_against_the_taught_questions(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    plain = run.generator(answer_filter=False)
    assert plain.taught is None  # nobody asks: not read at all
    taught = TaughtQuestions([("你好吗", "我很好。")])
    measuring = Generator(run.model, run.tokenizer, plain.constraints, measures=True, taught=taught)
    (answer,) = greedy_answers(measuring, ["你好"], 8)
    assert answer.answer is not None
    assert answer.answer.taught_similarity == pytest.approx(taught.similarity("你好", answer.answer.text))
    single = measuring.generate("你好", SamplingSettings(max_new_tokens=8))
    assert single.text == answer.text
    unmeasured = Generator(run.model, run.tokenizer, plain.constraints, measures=False, taught=taught)
    (bare,) = greedy_answers(unmeasured, ["你好"], 8)
    assert bare.answer is not None and bare.answer.taught_similarity is None  # no filter reads it: not worked out


def with_filter(run: Path, folder: Path, measure: str) -> Path:
    copy = folder / f"run_{measure}"
    shutil.copytree(run, copy)
    recipe = yaml.safe_load((copy / "recipe.yaml").read_text(encoding="utf-8"))
    recipe["generation"]["answer_filter"] = {"name": "confidence", "measure": measure, "threshold": 0.5}
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    refresh_fingerprint(RunFiles(copy), copy / "recipe.yaml")
    return copy


def test_a_filter_on_taught_questions_reads_the_training_file_it_was_trained_on(tiny_run: Path, workdir: Path) -> None:
    run_dir = with_filter(tiny_run, workdir, "taught_question")
    generator = load_run(run_dir).generator()
    assert generator.taught is not None and len(generator.taught) > 0
    out = generator.generate("你好", SamplingSettings(max_new_tokens=8))
    assert out.confidence is not None and 0.0 <= out.confidence <= 1.0


def test_a_changed_or_missing_training_file_is_an_error_naming_it(tiny_run: Path, workdir: Path) -> None:
    run_dir = with_filter(tiny_run, workdir, "min_logprob_taught")
    train = workdir / "tiny_train.jsonl"
    train.write_text(train.read_text(encoding="utf-8") + json.dumps({"prompt": "新", "completion": "新的。"}) + "\n")
    with pytest.raises(GptfError, match=r"tiny_train\.jsonl.*that file has changed since the run was trained"):
        load_run(run_dir).generator()
    assert load_run(run_dir).generator(answer_filter=False).taught is None  # without that filter: no need
    train.unlink()
    result = invoke(["generate", "--ckpt", str(run_dir), "--prompt", "你好"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "tiny_train.jsonl" in result.output and "that file is not here" in result.output


def test_calibration_compares_the_taught_measures_only_where_the_training_file_is_the_trained_one(
    tiny_run: Path, workdir: Path
) -> None:
    run_dir = workdir / "run"
    shutil.copytree(tiny_run, run_dir)
    assert invoke(["eval", "--ckpt", str(run_dir), "--calibrate"]).exit_code == 0
    measures = {m["measure"] for m in json.loads((run_dir / "calibration.json").read_text())["measures"]}
    assert {"taught_question", "min_logprob_taught"} <= measures
    (workdir / "tiny_train.jsonl").write_text(json.dumps({"prompt": "别的", "completion": "别的。"}) + "\n")
    result = invoke(["eval", "--ckpt", str(run_dir), "--calibrate"])
    assert result.exit_code == 0, result.output
    measures = {m["measure"] for m in json.loads((run_dir / "calibration.json").read_text())["measures"]}
    assert measures and not measures & {"taught_question", "min_logprob_taught"}  # not compared on a changed file


def test_beam_search_can_pick_the_candidate_taught_for_questions_like_this_one(tiny_run: Path) -> None:
    """beam_choice taught_question: among the final candidates, those whose taught answer was taught for
    the questions most like this one; among them the likeliest."""
    from gptf.decoding.beam_search import Candidate

    run = load_run(tiny_run)
    tok = run.tokenizer
    taught = TaughtQuestions([("压力锅为什么快", "高压锅气压高。"), ("天空为什么蓝", "蓝光散射多。")])
    constraints = run.generator(answer_filter=False).constraints
    generator = Generator(run.model, tok, constraints, beams=2, taught=taught, beam_choice="taught_question")
    likely_sky = Candidate(tok.encode("蓝光散射多。"), [], [], -1.0, "eos")  # mean -1/n: the likelier one
    pressure = Candidate(tok.encode("高压锅气压高。"), [], [], -30.0, "eos")
    pressure_too = Candidate(tok.encode("高压锅气压高。"), [], [], -20.0, "eos")
    choose = generator._taught_choice(["压力锅为啥快"])
    assert choose(0, [likely_sky, pressure]) is pressure  # the question is about pressure cookers
    assert choose(0, [likely_sky, pressure, pressure_too]) is pressure_too  # equally alike: the likelier
    assert generator._taught_choice(["天空为啥蓝"])(0, [likely_sky, pressure]) is likely_sky
    with pytest.raises(ValueError, match="needs the training questions"):
        Generator(run.model, tok, constraints, beams=2, beam_choice="taught_question")
    with pytest.raises(ValueError, match="beam_choice must be"):
        Generator(run.model, tok, constraints, beams=2, taught=taught, beam_choice="vibes")


def test_a_run_that_picks_by_taught_questions_reads_its_training_file(tiny_run: Path, workdir: Path) -> None:
    run_dir = workdir / "run_choice"
    shutil.copytree(tiny_run, run_dir)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    recipe["generation"].update(beams=3, beam_choice="taught_question")
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    refresh_fingerprint(RunFiles(run_dir), run_dir / "recipe.yaml")
    generator = load_run(run_dir).generator(answer_filter=False)
    assert generator.beam_choice == "taught_question" and generator.taught is not None
    assert generator.generate("你好", SamplingSettings(max_new_tokens=8)).text
    assert load_run(run_dir).generator(beams=1).beam_choice == "likelihood"  # greedy: nothing to choose from
    result = invoke(["eval", "--ckpt", str(run_dir), "--data", "tiny_val.jsonl", "--no-answer-filter"])
    assert result.exit_code == 0, result.output
    assert "chosen by taught questions" in json.loads((run_dir / "eval.json").read_text())["decoding"]
    (workdir / "tiny_train.jsonl").unlink()
    result = invoke(["generate", "--ckpt", str(run_dir), "--prompt", "你好"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "beam_choice" in result.output and "tiny_train.jsonl" in result.output


def calibrated_with_filter(run: Path, folder: Path, measure: str, **recorded: Any) -> tuple[Path, Path, dict[str, Any]]:
    """A copy of ``run`` whose recipe declines below 0.5 by ``measure``, with a calibration.json that chose
    that threshold and records ``recorded`` (and nothing else about how it measured): the run folder,
    the calibration file and what it holds."""
    run_dir = with_filter(run, folder, measure)  # threshold 0.5 in its recipe
    calibration = run_dir / "calibration.json"
    old = {"chosen": measure, "answer_filter": {"name": "confidence", "measure": measure, "threshold": 0.5}, **recorded}
    calibration.write_text(json.dumps(old), encoding="utf-8")
    return run_dir, calibration, old


def test_a_threshold_calibrated_with_another_question_similarity_is_named_when_the_run_is_opened(
    tiny_run: Path, workdir: Path
) -> None:
    """A run calibrated before rare characters (or numbers) counted more keeps an old threshold: say so."""
    run_dir, calibration, old = calibrated_with_filter(tiny_run, workdir, "taught_question")
    assert "Calibrate again" in load_run(run_dir).stale_calibration()
    result = invoke(["generate", "--ckpt", str(run_dir), "--prompt", "你好", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert (
        "compared questions by plain char F1" in result.stderr
        and f"now compares them by {QUESTION_SIMILARITY}" in result.stderr
        and f"gptf eval --ckpt {run_dir} --calibrate --apply" in result.stderr
    )
    assert "warning" not in result.stdout  # the answer's own output stays clean
    old["question_similarity"] = "char F1, characters weighted by rarity"  # numbers read as characters
    calibration.write_text(json.dumps(old), encoding="utf-8")
    assert "compared questions by char F1, characters weighted by rarity;" in load_run(run_dir).stale_calibration()
    old["question_similarity"] = QUESTION_SIMILARITY
    calibration.write_text(json.dumps(old), encoding="utf-8")
    assert load_run(run_dir).stale_calibration() is None
    # calibrated as gptf compares now: nothing to say
    calibration.write_text(json.dumps({**old, "question_similarity": QUESTION_SIMILARITY}), encoding="utf-8")
    assert load_run(run_dir).stale_calibration() is None
    # a threshold set by hand after the calibration, or no calibration at all: not this calibration's business
    calibration.write_text(
        json.dumps({**old, "answer_filter": {**old["answer_filter"], "threshold": 0.7}}), encoding="utf-8"
    )
    assert load_run(run_dir).stale_calibration() is None
    calibration.unlink()
    assert load_run(run_dir).stale_calibration() is None
    # gptf eval --calibrate records how it compared
    assert invoke(["eval", "--ckpt", str(run_dir), "--calibrate"]).exit_code == 0
    recorded = json.loads(calibration.read_text(encoding="utf-8"))
    assert (recorded["question_similarity"], recorded["taught_weight"]) == (QUESTION_SIMILARITY, TAUGHT_WEIGHT)


def test_a_run_asked_from_another_folder_finds_its_training_file_above_it(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gptf chat --ckpt ~/project/checkpoints/run`` from elsewhere: the training file is found under a
    folder above the run, but only if it is the very file the run was trained on (run.json's sha256)."""
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run.parent / "tiny_train.jsonl", project)
    run_dir = with_filter(tiny_run, project / "checkpoints", "taught_question")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = load_run(run_dir)
    assert run.taught_questions(required=True) is not None and len(run.draft_bank()) > 0
    result = invoke(["generate", "--ckpt", str(run_dir), "--prompt", "你好"])
    assert result.exit_code == 0, result.output
    train = project / "tiny_train.jsonl"
    train.write_text(train.read_text(encoding="utf-8") + json.dumps({"prompt": "新", "completion": "新的。"}) + "\n")
    result = invoke(["generate", "--ckpt", str(run_dir), "--prompt", "你好"])  # another file by that name
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "tiny_train.jsonl" in result.output and "that file is not here" in result.output
    assert len(load_run(run_dir).draft_bank()) == 0  # guesses only from files the run was trained on


def test_a_threshold_calibrated_with_another_taught_weight_is_named_when_the_run_is_opened(
    tiny_run: Path, workdir: Path
) -> None:
    """min_logprob_taught's threshold means something else once taught_question weighs otherwise in it."""
    # calibrated as questions are compared now, but before the weight was recorded (it was 8 then)
    run_dir, calibration, old = calibrated_with_filter(
        tiny_run, workdir, "min_logprob_taught", question_similarity=QUESTION_SIMILARITY
    )
    warning = load_run(run_dir).stale_calibration()
    assert f"min_logprob_taught added 8 x taught_question; it now adds {TAUGHT_WEIGHT:g} x" in warning
    assert "compared questions" not in warning and "--calibrate --apply" in warning
    calibration.write_text(json.dumps(old | {"taught_weight": TAUGHT_WEIGHT}), encoding="utf-8")
    assert load_run(run_dir).stale_calibration() is None
    # a calibration of another threshold (set by hand since) says nothing about this one
    calibration.write_text(json.dumps(old | {"answer_filter": {"threshold": 0.7}}), encoding="utf-8")
    assert load_run(run_dir).stale_calibration() is None
