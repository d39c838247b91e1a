"""The answer filter: declines unsure answers, everywhere answers are made; calibrated on val only."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES, invoke, run_gptf

from gptf.data import read_jsonl
from gptf.evaluate import best_threshold, separation, threshold_rows
from gptf.generate import Generator, greedy_answers
from gptf.interfaces import CONFIDENCE_MEASURES, DECLINE_TEXT, OVERLAP_WEIGHT, FinishedAnswer
from gptf.plugins.answer_filters.confidence import ConfidenceFilter
from gptf.train.fingerprints import refresh_fingerprint
from gptf.train.run_files import RunFiles

SURE = FinishedAnswer("q", "a", (1, 2), (-0.1, -0.3), (0.2, 0.4))
UNSURE = FinishedAnswer("q", "b", (3, 4, 5), (-2.0, -3.0, -1.0), (2.0, 3.0, 1.0))


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def with_filter(run: Path, folder: Path, spec: object, test_file: str | None = None) -> Path:
    """A copy of ``run`` whose recipe has ``generation.answer_filter: spec`` (and data.test)."""
    copy = folder / f"run_{abs(hash(str(spec))) % 10_000}"
    shutil.copytree(run, copy)
    recipe = yaml.safe_load((copy / "recipe.yaml").read_text(encoding="utf-8"))
    recipe["generation"]["answer_filter"] = spec
    if test_file:
        recipe["data"]["test"] = test_file
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    refresh_fingerprint(RunFiles(copy), copy / "recipe.yaml")  # as if the run had been trained with it
    return copy


def test_confidence_measures_by_hand() -> None:
    assert SURE.measure("mean_logprob") == pytest.approx(-0.2)
    assert SURE.measure("min_logprob") == pytest.approx(-0.3)
    assert SURE.measure("entropy") == pytest.approx(-0.3)
    assert UNSURE.measure("mean_logprob") == pytest.approx(-2.0)
    assert FinishedAnswer("q", "", (), (), ()).measure("mean_logprob") == -math.inf  # no answer: no confidence
    with pytest.raises(ValueError, match="unknown confidence measure"):
        SURE.measure("vibes")


def test_question_overlap_measures_whether_the_answer_talks_about_the_question() -> None:
    """The share of the question's characters (punctuation and spaces aside) the answer uses too,
    and min_logprob plus 4 times that."""
    question, sure = "压力锅为什么煮得快？", (-0.5, -1.0)
    on_topic = FinishedAnswer(question, "高压锅密封后气压升高，水的沸点更高，煮得快。", (1, 2), sure, (0, 0))
    off_topic = FinishedAnswer(question, "点积是两个向量对应位置相乘再求和。", (1, 2), sure, (0, 0))
    # 压力锅为什么煮得快: 9 characters; the first answer has 压, 锅, 煮, 得, 快 (5), the second none
    assert on_topic.measure("question_overlap") == pytest.approx(5 / 9)
    assert off_topic.measure("question_overlap") == 0.0
    assert on_topic.measure("min_logprob_overlap") == pytest.approx(-1.0 + OVERLAP_WEIGHT * 5 / 9)
    assert off_topic.measure("min_logprob_overlap") == pytest.approx(-1.0)
    assert FinishedAnswer("？？", "好的", (1,), (-0.1,), (0,)).measure("question_overlap") == 0.0  # nothing asked
    assert FinishedAnswer("q", "", (), (), ()).measure("question_overlap") == -math.inf  # no answer
    repeated = FinishedAnswer("锅锅锅锅", "锅", (1,), (-0.1,), (0,))
    assert repeated.measure("question_overlap") == pytest.approx(1 / 4)  # counted as often as asked
    f = ConfidenceFilter(tokenizer=None, threshold=0.5, measure="min_logprob_overlap")  # type: ignore[arg-type]
    assert f.keep(f.confidence(on_topic)) and not f.keep(f.confidence(off_topic))


def test_filter_fires_below_the_threshold_and_not_above() -> None:
    f = ConfidenceFilter(tokenizer=None, threshold=-1.0)  # type: ignore[arg-type]
    assert f.keep(f.confidence(SURE)) and not f.keep(f.confidence(UNSURE))
    assert f.keep(-1.0)  # at the threshold: kept
    assert f.reply == DECLINE_TEXT
    with pytest.raises(ValueError, match="reply"):
        ConfidenceFilter(tokenizer=None, reply=" ")  # type: ignore[arg-type]


def test_generator_declines_just_below_and_answers_just_above(tiny_run: Path) -> None:
    from gptf.run import load_run, sampling_settings

    run = load_run(tiny_run)
    plain = run.generator()
    settings = sampling_settings(run.recipe)
    prompt = "什么是RoPE？"
    answer = plain.generate(prompt, settings)
    assert answer.confidence is None and not answer.declined and answer.model_text == answer.text
    confidence = FinishedAnswer(prompt, "", (), tuple(math.log(t.probability) for t in answer.tokens), ()).measure(
        "mean_logprob"
    )  # greedy at temperature 1: the picked probability is the model's own
    for threshold, declined in ((confidence + 1e-4, True), (confidence - 1e-4, False)):
        f = ConfidenceFilter(run.tokenizer, threshold=threshold)
        g = Generator(plain.model, plain.tokenizer, plain.constraints, answer_filter=f)
        filtered = g.generate(prompt, settings)
        assert filtered.declined is declined
        assert filtered.confidence == pytest.approx(confidence, abs=1e-5)
        assert filtered.text == (DECLINE_TEXT if declined else answer.text)
        assert filtered.model_text == answer.text
        (batched,) = greedy_answers(g, [prompt], settings.max_new_tokens)  # the batched evaluation agrees
        assert (batched.text, batched.declined, batched.model_text) == (filtered.text, declined, answer.text)


def test_the_recipe_key_is_checked_like_any_component(workdir: Path) -> None:
    from gptf.build.components import component_problems, registry_for
    from gptf.errors import RecipeError
    from gptf.recipe import load_recipe

    shutil.copy(FIXTURES / "tiny.yaml", workdir / "tiny.yaml")
    tiny = FIXTURES / "tiny.yaml"
    loaded = load_recipe(tiny, ["generation.answer_filter={name: confidence, threshold: -1.5, measure: entropy}"])
    assert loaded.recipe.generation.answer_filter.params == {"threshold": -1.5, "measure": "entropy"}
    registry = registry_for(loaded)
    assert component_problems(loaded.recipe, registry) == []
    bad = load_recipe(tiny, ["generation.answer_filter={name: confidence, measure: vibes, treshold: 1}"])
    with pytest.raises(RecipeError) as error:
        registry_for(bad)
    text = "\n".join(error.value.problems)
    assert "generation.answer_filter.measure" in text and "did you mean 'threshold'" in text
    loose = load_recipe(tiny, ["generation.answer_filter={name: confidence, threshold: soon}"])
    with pytest.raises(RecipeError) as error:
        registry_for(loose)
    assert "expected float | 'auto', got str 'soon'" in "\n".join(error.value.problems)


def test_threshold_rows_by_hand() -> None:
    confidences = [-0.1, -0.2, -1.0, -2.0, -3.0]
    verdicts = ["right", "right", "wrong", "wrong", "right"]
    rows = threshold_rows(confidences, verdicts)
    off = rows[0]
    assert off.threshold == -math.inf and off.trustworthy == pytest.approx(0.6) and off.declined == 0
    best = best_threshold(rows)
    assert best.threshold == pytest.approx(-0.6)  # declines -1, -2, -3: two wrong, one right
    assert best.trustworthy == pytest.approx(0.8) and best.declined == pytest.approx(0.6)
    assert best.right_declined == pytest.approx(0.2) and best.wrong_kept == 0
    # declining at most 40%: -1.5 is as good as no filter (0.6), so the filter stays off
    assert best_threshold(rows, max_declined=0.4).threshold == -math.inf
    assert separation(confidences, verdicts) == pytest.approx(4 / 6)
    # an answer the model declined itself stays declined at every threshold, and counts as honest
    rows = threshold_rows([-0.1, -5.0], ["right", "declined"])
    assert best_threshold(rows).threshold == -math.inf and rows[0].trustworthy == 1.0


def test_the_filter_may_hide_at_most_a_share_of_the_right_answers() -> None:
    # 2 right, 8 wrong: keeping only the surest answer is the most trustworthy, but hides a right one
    confidences = [-0.1, -0.6, -0.2, -0.3, -0.4, -0.5, -0.7, -0.8, -0.9, -1.0]
    verdicts = ["right", "right"] + ["wrong"] * 8
    rows = threshold_rows(confidences, verdicts)
    best = best_threshold(rows)
    assert best.threshold == pytest.approx(-0.15) and best.trustworthy == pytest.approx(0.9)
    assert best.right_declined == pytest.approx(0.1)
    kept_all_right = best_threshold(rows, max_right_lost=0.0)  # may hide no right answer
    assert kept_all_right.threshold == pytest.approx(-0.65) and kept_all_right.right_declined == 0
    assert kept_all_right.trustworthy == pytest.approx(0.6) and kept_all_right.wrong_kept == pytest.approx(0.4)
    assert best_threshold(rows, max_right_lost=0.5) == best  # one of the two right answers may go


def test_where_a_threshold_shows_few_wrong_answers_one_of_those() -> None:
    # 7 right, 3 wrong: declining the last two leaves 1 wrong shown (10%); declining the last four as well
    # hides a right one but shows no wrong one: equally trustworthy (0.9), and it declines more
    confidences = [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8, -0.9, -1.0]
    verdicts = ["right"] * 6 + ["wrong", "right", "wrong", "wrong"]
    rows = threshold_rows(confidences, verdicts)
    fewest_declined = best_threshold(rows, max_right_lost=0.2)
    assert fewest_declined.threshold == pytest.approx(-0.85) and fewest_declined.wrong_kept == pytest.approx(0.1)
    few_wrong = best_threshold(rows, max_right_lost=0.2, max_wrong_shown=0.05)
    assert few_wrong.threshold == pytest.approx(-0.65) and few_wrong.wrong_kept == 0
    assert few_wrong.trustworthy == pytest.approx(0.9) and few_wrong.right_declined == pytest.approx(0.1)
    # none within the other limit (1 of 7 right answers is more than 10%): the most trustworthy, as before
    assert best_threshold(rows, max_right_lost=0.1, max_wrong_shown=0.05) == fewest_declined
    # a threshold with few wrong answers but less trustworthy than no filter is not taken: the filter stays off
    rows = threshold_rows([-0.1, -0.2, -0.3, -0.4], ["right", "wrong", "right", "right"])
    off = best_threshold(rows, max_wrong_shown=0.1)
    assert off.threshold == -math.inf and off.trustworthy == pytest.approx(0.75)


def test_threshold_auto_is_calibrated_at_the_end_of_the_run(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from gptf.recipe import load_recipe
    from gptf.run import load_run, run_recipe

    auto = "generation.answer_filter={name: confidence, measure: entropy, threshold: auto}"
    loaded = load_recipe(FIXTURES / "tiny.yaml", [f"output_dir={workdir / 'run'}", auto])
    assert ConfidenceFilter(None, threshold="auto").threshold == -math.inf  # type: ignore[arg-type]  # until then
    console = Console(record=True, width=200)
    decoded: list[int] = []  # prompts answered by the batched loop: val once (calibration), not twice
    plain_decode = Generator.decode
    monkeypatch.setattr(
        Generator, "decode", lambda self, rows, *a, **k: decoded.append(len(rows)) or plain_decode(self, rows, *a, **k)
    )
    result = run_recipe(loaded, console)
    assert 0 < sum(decoded) <= len(read_jsonl("tiny_val.jsonl")) + len(loaded.recipe.demo_prompts)
    monkeypatch.setattr(Generator, "decode", plain_decode)
    run = result.run_dir
    calibration = json.loads((run / "calibration.json").read_text(encoding="utf-8"))
    assert calibration["val"] == "tiny_val.jsonl" and calibration["max_right_lost"] == pytest.approx(0.1)
    assert calibration["max_wrong_shown"] == pytest.approx(0.08)
    saved = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))["generation"]["answer_filter"]
    assert saved == calibration["answer_filter"]  # a number (or none), never "auto" any more
    assert saved == "none" or isinstance(saved["threshold"], float)
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert info["answer_filter"]["answer_filter"] == saved
    assert "answer filter" in console.export_text()
    loaded_run = load_run(run)  # the fingerprints hold: the recipe was written before run.json

    # the run scored val by reviewing the calibration's answers again: the same as answering anew
    def val_answers(path: Path) -> list:
        answers = json.loads(path.read_text(encoding="utf-8"))["splits"][0]["answers"]
        return [{k: v for k, v in a.items() if k != "seconds"} for a in answers]

    samples = read_jsonl("tiny_val.jsonl")
    fresh = greedy_answers(
        loaded_run.generator(), [s.prompt for s in samples], loaded_run.recipe.generation.max_new_tokens
    )
    saved = val_answers(run / "eval.json")
    assert [a["answer"] for a in saved] == [a.text for a in fresh]
    assert [a["declined"] for a in saved] == [a.declined for a in fresh]


def test_answers_given_before_are_reviewed_not_recomputed(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gptf.run import load_run

    run = load_run(tiny_run)
    prompts = [s.prompt for s in read_jsonl(tiny_run.parent / "tiny_val.jsonl")]
    answered: dict = {}
    plain = Generator(run.model, run.tokenizer, run.generator().constraints, answered=answered, measures=True)
    first = greedy_answers(plain, prompts, 12)
    assert len(answered) == len(prompts)
    strict = ConfidenceFilter(run.tokenizer, threshold=1.0)  # declines everything
    again = Generator(run.model, run.tokenizer, plain.constraints, answer_filter=strict, answered=answered)
    monkeypatch.setattr(Generator, "decode", lambda *a, **k: pytest.fail("answered again"))
    second = greedy_answers(again, prompts, 12)
    assert [a.model_text for a in second] == [a.text for a in first] and all(a.declined for a in second)


def test_no_threshold_helps_a_model_that_is_always_right() -> None:
    rows = threshold_rows([-0.1, -0.5, -2.0], ["right"] * 3)
    assert best_threshold(rows).threshold == -math.inf


def test_calibrate_reads_val_only_and_apply_writes_the_recipe(
    tiny_run: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_file = workdir / "tiny_test.jsonl"
    test_file.write_text(json.dumps({"prompt": "秘密问题", "completion": "只在测试集里的答案。"}) + "\n")
    run = with_filter(tiny_run, workdir, "none", test_file=str(test_file))
    import gptf.data

    read: list[str] = []
    original = gptf.data.parse_jsonl
    monkeypatch.setattr(gptf.data, "parse_jsonl", lambda path: read.append(str(path)) or original(path))
    result = invoke(["eval", "--ckpt", str(run), "--calibrate", "--apply", "--max-wrong-shown", "0.2"])
    assert result.exit_code == 0, result.output
    assert read and not any("test" in Path(p).name for p in read), read  # never the test file
    assert "answer filter calibration" in result.output and "mean_logprob" in result.output
    calibration = json.loads((run / "calibration.json").read_text(encoding="utf-8"))
    assert calibration["val"] == "tiny_val.jsonl" and calibration["answers"] == 4
    assert calibration["max_wrong_shown"] == pytest.approx(0.2)
    assert {m["measure"] for m in calibration["measures"]} == set(CONFIDENCE_MEASURES)
    assert {"question_overlap", "min_logprob_overlap"} < set(CONFIDENCE_MEASURES)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))
    assert recipe["generation"]["answer_filter"] == calibration["answer_filter"]
    from gptf.run import load_run

    load_run(run)  # the applied recipe still loads


def test_calibrate_refuses_other_files(tiny_run: Path, workdir: Path) -> None:
    result = invoke(["eval", "--ckpt", str(tiny_run), "--calibrate", "--data", "tiny_val.jsonl"])
    assert result.exit_code != 0 and "val file (data.val) only" in result.output
    result = invoke(["eval", "--ckpt", str(tiny_run), "--apply"])
    assert result.exit_code != 0 and "--apply writes what --calibrate chose" in result.output


def test_generate_chat_serve_and_eval_show_the_decline(tiny_run: Path, workdir: Path) -> None:
    run = with_filter(tiny_run, workdir, {"name": "confidence", "threshold": 1.0})  # above any log-probability
    result = run_gptf(["generate", "--ckpt", str(run), "--prompt", "什么是RoPE？"], workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == DECLINE_TEXT and "declined by the answer filter" in result.stderr

    from gptf.run import load_run, sampling_settings
    from gptf.tools.chat import ChatSession
    from gptf.tools.serve import ChatService, parse_chat_request

    loaded = load_run(run)
    session = ChatSession(loaded.generator(), sampling_settings(loaded.recipe))
    answer, note = session.ask("什么是RoPE？")
    assert answer == DECLINE_TEXT and "declined: confidence" in note

    service = ChatService(loaded, [])
    assert service.info()["answer_filter"] == {
        "name": "confidence",
        "measure": "mean_logprob",
        "threshold": 1.0,
        "reply": DECLINE_TEXT,
    }
    reply = service.answer(parse_chat_request({"question": "什么是RoPE？"}, service.defaults, service.max_tokens))
    assert reply["declined"] is True and reply["answer"] == DECLINE_TEXT
    assert reply["model_answer"] and reply["confidence"] < 1.0 and reply["tokens"]

    out = workdir / "scores.json"
    result = run_gptf(["eval", "--ckpt", str(run), "--out", str(out), "--recall-samples", "5"], workdir)
    assert result.returncode == 0, result.stderr
    splits = {s["name"]: s for s in json.loads(out.read_text(encoding="utf-8"))["splits"]}
    assert splits["val"]["declined"] == 1.0 and splits["val"]["right_concept"] == 0.0
    assert all(a["declined"] and a["model_answer"] for a in splits["val"]["answers"])
    result = run_gptf(["eval", "--ckpt", str(run), "--out", str(out), "--no-answer-filter"], workdir)
    assert json.loads(out.read_text(encoding="utf-8"))["splits"][1]["declined"] == 0.0


def test_every_val_answer_gets_a_verdict_in_the_end_of_run_evaluation(tiny_run: Path) -> None:
    info = json.loads((tiny_run / "run.json").read_text(encoding="utf-8"))
    val = info["val_eval"]
    assert val["right_concept"] + val["declined"] + val["wrong_concept"] == pytest.approx(1.0)
    assert len(read_jsonl(FIXTURES / "tiny_val.jsonl")) == val["evaluated"]


def test_plugin_check_explains_a_filter_without_a_threshold(tmp_path: Path) -> None:
    from gptf.tools.plugin_check import check_target

    path = tmp_path / "stubborn.py"
    path.write_text(
        "from gptf import hookimpl\n"
        "from gptf.interfaces import AnswerFilter\n\n"
        "class Stubborn(AnswerFilter):\n"
        "    def __init__(self, tokenizer):\n"
        "        pass\n\n"
        "    def confidence(self, answer):\n"
        "        return 0.0\n\n"
        "@hookimpl\n"
        "def register_answer_filters():\n"
        "    return {'stubborn': Stubborn}\n",
        encoding="utf-8",
    )
    (report,) = check_target(str(path))
    details = {f.check: f.detail for f in report.findings if f.status == "fail"}
    assert "threshold" in details["confidence/threshold"]
