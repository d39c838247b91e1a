"""Answering many prompts side by side (gptf.generate.greedy_answers with workers).

Groups of prompts are answered by several threads at once, each with one PyTorch thread:
* the answers, and every measure of them, are those of one worker (greedy and beam search);
* ``one_thread_per_worker`` gives greedy_answers as many workers as PyTorch had threads, and puts
  the thread setting back afterwards, also after an error;
* an error in a group reaches the caller; progress counts every prompt once, in the caller's thread.
No timing here: speed is measured by ``benchmarks/generation_speed.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES

from gptf.data import read_jsonl
from gptf.generate import ANSWER_WORKERS, greedy_answers, one_thread_per_worker
from gptf.run import LoadedRun, load_run

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # (conftest.py)

PROMPTS = [s.prompt for s in read_jsonl(FIXTURES / "tiny_train.jsonl") + read_jsonl(FIXTURES / "tiny_val.jsonl")]
PROMPTS += ["你好", "什么是注意力机制？请详细说明", "为什么", "解释一下量化和蒸馏的区别", "问" * 200]


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> LoadedRun:
    return load_run(tiny_run)


@pytest.mark.parametrize("beams", [1, 3])
def test_workers_give_the_answers_of_one_worker(run: LoadedRun, beams: int) -> None:
    alone = greedy_answers(run.generator(beams=beams), PROMPTS, 16, batch_size=4, workers=1)
    for workers in (2, 3):
        side_by_side = greedy_answers(run.generator(beams=beams), PROMPTS, 16, batch_size=4, workers=workers)
        assert side_by_side == alone  # text, tokens, confidence, verdict and every per-token measure
    assert alone[-1].text == "" and alone[-1].tokens == 0  # too long to answer: no room, no crash
    assert len({len(run.generator().prompt_ids(p)) for p in PROMPTS[:-1]}) > 3  # several groups to share


def test_one_thread_per_worker_sets_the_workers_and_restores_the_threads(run: LoadedRun) -> None:
    torch.set_num_threads(2)
    try:
        assert ANSWER_WORKERS.get() == 1  # outside: one worker
        with one_thread_per_worker() as workers:
            assert workers == 2 and ANSWER_WORKERS.get() == 2 and torch.get_num_threads() == 1
            seen: set[str] = set()
            generator = run.generator(beams=1)
            decode = generator.decode

            def recording(*args: object, **kwargs: object) -> object:
                seen.add(threading.current_thread().name)
                assert torch.get_num_threads() == 1  # each worker computes with one thread
                return decode(*args, **kwargs)

            generator.decode = recording  # type: ignore[method-assign]
            greedy_answers(generator, PROMPTS, 8, batch_size=2)
            assert len(seen) == 2 and all(name.startswith("gptf-answer") for name in seen)
        assert torch.get_num_threads() == 2 and ANSWER_WORKERS.get() == 1
        with pytest.raises(RuntimeError, match="boom"), one_thread_per_worker():
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2 and ANSWER_WORKERS.get() == 1
    finally:
        torch.set_num_threads(1)


def test_an_error_in_a_group_reaches_the_caller_and_progress_counts_each_prompt_once(run: LoadedRun) -> None:
    generator = run.generator(beams=1)
    progress: list[tuple[int, str]] = []
    greedy_answers(
        generator, PROMPTS, 8, batch_size=2, workers=2,
        on_progress=lambda done: progress.append((done, threading.current_thread().name)),
    )  # fmt: skip
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert progress[-1][0] == len(PROMPTS)
    assert {name for _, name in progress} == {threading.current_thread().name}  # the caller's thread
    decode, calls = generator.decode, []

    def failing(rows: list[list[int]], *args: object, **kwargs: object) -> object:
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError("the third group failed")
        return decode(rows, *args, **kwargs)

    generator.decode = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="third group"):
        greedy_answers(generator, PROMPTS, 8, batch_size=2, workers=2)


def test_a_constraint_that_is_not_thread_safe_keeps_one_worker(run: LoadedRun) -> None:
    """A plugin's constraint has to say it may run in several threads (DecodingConstraint.thread_safe);
    until it does, its groups are answered one after the other, in the caller's thread."""
    from gptf.interfaces import DecodingConstraint, DecodingState

    threads: set[str] = set()

    class Counting(DecodingConstraint):  # keeps state: not safe to call from two threads at once
        def adjust_logits(self, logits: torch.Tensor, state: DecodingState) -> torch.Tensor:
            threads.add(threading.current_thread().name)
            return logits

    generator = run.generator(beams=1)
    assert all(c.thread_safe for c in generator.constraints)  # the built-in ones are
    generator.constraints.append(Counting())
    with one_thread_per_worker():
        ANSWER_WORKERS.set(2)
        greedy_answers(generator, PROMPTS, 8, batch_size=2)
    assert threads == {threading.current_thread().name}


def test_gptf_eval_threads_count_workers_and_give_the_same_scores(tiny_run: Path, tmp_path: Path) -> None:
    import json

    from conftest import invoke

    scores = {}
    try:
        for threads in ("1", "2"):
            out = tmp_path / f"eval_{threads}.json"
            data = ["--data", str(FIXTURES / "tiny_val.jsonl"), "--data", str(FIXTURES / "tiny_train.jsonl")]
            result = invoke(["eval", "--ckpt", str(tiny_run), *data, "--threads", threads, "--out", str(out)])
            assert result.exit_code == 0, result.output
            assert torch.get_num_threads() == int(threads)  # put back after answering with one per worker
            scores[threads] = [s["answers"] for s in json.loads(out.read_text(encoding="utf-8"))["splits"]]
    finally:
        torch.set_num_threads(1)
    assert scores["1"] == scores["2"] and sum(len(split) for split in scores["1"]) > 10
