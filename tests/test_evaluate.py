"""gptf eval: the scores by hand, and the command end to end on the tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, run_gptf

from gptf.data import Sample
from gptf.evaluate import (
    char_f1,
    content_chars,
    exact_match,
    lcs_length,
    readability_problem,
    rouge_l,
    sample_evenly,
    score_answer,
)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the gptf processes below: small model, shared machine


def test_exact_match_ignores_whitespace_and_final_punctuation() -> None:
    assert exact_match(" 太阳系有八颗行星。\n", "太阳系有八颗行星")
    assert exact_match("太阳系有八颗行星!", "太阳系有八颗行星。")
    assert not exact_match("太阳系有九颗行星。", "太阳系有八颗行星。")
    assert not exact_match("太阳系有八颗行星。", "太阳系，有八颗行星。")  # only the *final* punctuation


def test_char_f1_by_hand() -> None:
    # answer 北京是首都 (5 chars), reference 中国的首都是北京 (8 chars); shared 北京是首都 = 5
    p, r = 5 / 5, 5 / 8
    assert char_f1("北京是首都。", "中国的首都是北京。") == pytest.approx(2 * p * r / (p + r))
    assert char_f1("啊啊", "啊") == pytest.approx(2 * 0.5 * 1 / 1.5)  # counted with multiplicity
    assert char_f1("", "北京") == 0.0
    assert char_f1("。", "！") == 1.0  # punctuation only on both sides: nothing to disagree on
    assert content_chars("GPT 是，模型。") == "GPT是模型"


def test_rouge_l_cares_about_order_and_char_f1_does_not() -> None:
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example
    assert lcs_length("", "abc") == 0
    assert char_f1("京北", "北京") == 1.0
    assert rouge_l("京北", "北京") == pytest.approx(0.5)
    assert rouge_l("注意力机制", "注意力机制") == 1.0


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("注意力让每个词参考前面的词。", ""),
        ("一万写作10000。", ""),  # repeated digits are numbers, not loops
        ("哈哈哈", ""),
        ("", "empty"),
        ("   ", "empty"),
        ("注意力\ufffd机制", "broken character (U+FFFD)"),
        ("的的的的的", "repeats '的'"),
        ("注意力注意力注意力", "repeats '注意力'"),
        ("模型是模型是模型是一种", "repeats '模型是'"),
    ],
)
def test_readability(answer: str, problem: str) -> None:
    assert readability_problem(answer) == problem


def test_score_answer_and_sampling() -> None:
    score = score_answer(Sample("问", "答案。", "f:1"), "答案")
    assert score.exact and score.char_f1 == 1.0 and score.rouge_l == 1.0 and score.readable
    samples = [Sample(str(i), "x") for i in range(10)]
    chosen = sample_evenly(samples, 4)
    assert len(chosen) == 4 and chosen == sample_evenly(samples, 4)  # seeded
    assert [int(s.prompt) for s in chosen] == sorted(int(s.prompt) for s in chosen)  # file order kept
    assert sample_evenly(samples, 0) == samples


def test_eval_command_reports_recall_and_generalisation(tiny_run: Path, tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "tiny_train.jsonl", tmp_path)
    shutil.copy(FIXTURES / "tiny_val.jsonl", tmp_path)
    out = tmp_path / "scores.json"
    result = run_gptf(["eval", "--ckpt", str(tiny_run), "--out", str(out), "--recall-samples", "10"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recall" in result.stdout and "generalisation" in result.stdout and "readable" in result.stdout
    assert "concept right / declined / wrong" in result.stdout and "numbers intact" in result.stdout
    assert "worst" in result.stdout
    assert "train: scored a seeded random sample of 10 of 24 prompts" in result.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    splits = {s["name"]: s for s in report["splits"]}
    assert set(splits) == {"train", "val"}  # tiny.yaml has no data.test
    assert splits["train"]["kind"] == "recall" and splits["train"]["evaluated"] == 10
    assert splits["train"]["seen_in_training"] == 1.0
    assert splits["val"]["kind"] == "generalisation" and splits["val"]["evaluated"] == 4
    answer = splits["val"]["answers"][0]
    assert {"prompt", "reference", "answer", "exact", "char_f1", "rouge_l", "readable", "problem"} <= set(answer)
    assert {"concept", "verdict", "answer_concept", "numbers_intact", "declined", "confidence"} <= set(answer)
    for split in splits.values():  # every file: right + declined + wrong concept = all answers
        assert split["right_concept"] + split["declined"] + split["wrong_concept"] == pytest.approx(1.0)
        assert "numbers_intact" in split and "numbers_checked" in split
    for split in report["splits"]:  # the summary is the mean of the answers
        mean = sum(a["char_f1"] for a in split["answers"]) / len(split["answers"])
        assert split["char_f1"] == pytest.approx(mean, abs=1e-4)


def test_eval_with_data_files_and_quantized(tiny_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "extra.jsonl"
    data.write_text(json.dumps({"prompt": "什么是RoPE？", "completion": "RoPE用旋转把位置信息放进查询和键里。"}) + "\n")
    result = run_gptf(["eval", "--ckpt", str(tiny_run), "--data", str(data), "--quantized"], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tiny_run / "eval.int8.json").read_text(encoding="utf-8"))
    assert report["quantized"] is True and [s["name"] for s in report["splits"]] == ["extra"]


def test_eval_without_data_is_a_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    result = run_gptf(["eval", "--ckpt", str(tiny_run)], tmp_path)  # the data files are not here
    assert result.returncode == 2
    assert "nothing to evaluate" in result.stderr and "Traceback" not in result.stderr
    # the run found its training file in the folder above it: the hint names that folder
    assert f"this run's data files are in {tiny_run.parent.resolve()}" in " ".join(result.stderr.split())


def test_run_ends_with_the_val_evaluation(tiny_run: Path) -> None:
    info = json.loads((tiny_run / "run.json").read_text(encoding="utf-8"))
    assert info["val_eval"]["name"] == "val" and info["val_eval"]["evaluated"] == 4
    saved = json.loads((tiny_run / "eval.json").read_text(encoding="utf-8"))
    assert saved["splits"][0]["kind"] == "generalisation"


def test_batched_greedy_answers_equal_one_by_one(tiny_run: Path) -> None:
    from gptf.data import read_jsonl
    from gptf.generate import greedy_answers, group_by_length
    from gptf.run import load_run, sampling_settings

    run = load_run(tiny_run)
    generator = run.generator()
    prompts = [s.prompt for s in read_jsonl(FIXTURES / "tiny_train.jsonl") + read_jsonl(FIXTURES / "tiny_val.jsonl")]
    prompts.append("问" * 200)  # too long to answer: an empty answer, not a crash
    settings = sampling_settings(run.recipe, temperature=0.0)
    batched = greedy_answers(generator, prompts, settings.max_new_tokens, batch_size=4)
    assert batched[-1].text == "" and batched[-1].tokens == 0
    for prompt, answer in zip(prompts[:-1], batched, strict=False):
        single = generator.generate(prompt, settings)
        assert (answer.text, answer.tokens) == (single.text, len(single.tokens)), prompt
    groups = group_by_length([[1, 2], [3], None, [4, 5], [6, 7]], batch_size=2)
    assert groups == [[1], [0, 3], [4]]


def test_finished_rows_leave_the_batch_and_the_others_answer_as_alone(tiny_run: Path) -> None:
    """Row r of the batch stops after r + 1 tokens: the model is fed 4, 3, 2, then 1 row, and every
    row gets the tokens (and the probabilities) it gets when decoded alone."""
    from gptf.generate import Generator, SamplingSettings
    from gptf.interfaces import DecodingConstraint, DecodingState
    from gptf.run import load_run

    class StopAfter(DecodingConstraint):  # the row's second prompt token says how many tokens it may have
        def should_stop(self, state: DecodingState) -> bool:
            return len(state.new_ids) > state.prompt_ids[1] - 10

    run = load_run(tiny_run)
    generator = Generator(run.model, run.tokenizer, [StopAfter()])
    fed: list[int] = []
    hook = run.model.register_forward_pre_hook(lambda module, args: fed.append(args[0].size(0)))
    bos = run.tokenizer.bos_id
    rows = [[bos, 10 + r, 40, 41, 42] for r in range(4)]
    settings = SamplingSettings(max_new_tokens=12, temperature=0.0)
    try:
        batched = generator.decode(rows, settings)
        fed_batched, fed[:] = list(fed), []
        alone = [generator.decode([row], settings)[0] for row in rows]
    finally:
        hook.remove()
    assert fed_batched == [4, 3, 2, 1]  # the prompt, then one step per token; finished rows left
    assert [len(r.state.new_ids) for r in batched] == [1, 2, 3, 4]
    for b, a in zip(batched, alone, strict=True):
        assert (b.state.new_ids, b.stop_reason) == (a.state.new_ids, a.stop_reason)
        assert b.probabilities == pytest.approx(a.probabilities, abs=1e-6)
