"""Answering many prompts side by side (gptf.generate.greedy_answers with workers).

Groups of prompts are answered by several workers at once, forked processes where that is safe (on
Linux, from the main thread) or threads, each with one PyTorch thread (gptf.decoding.answer_workers):
* the answers, and every measure of them, are those of one worker (greedy and beam search, both kinds);
* ``side_by_side_answers`` gives greedy_answers as many worker processes as PyTorch has threads, each
  computing with one thread, and where there are no processes one worker, the caller, with PyTorch's
  threads; this process's thread setting never changes, also after an error;
* an error in a group reaches the caller; progress counts every prompt once, in the caller's thread;
* an interrupt in the caller (Ctrl-C) stops the worker processes: none is left running.
No timing here: speed is measured by ``benchmarks/generation_speed.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES

import gptf.decoding.answer_workers as answer_workers
from gptf.data import read_jsonl
from gptf.decoding.answer_workers import ANSWER_WORKERS, side_by_side_answers
from gptf.generate import greedy_answers
from gptf.run import LoadedRun, load_run

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # (conftest.py)
FORKING = answer_workers.processes_possible()  # (here, in the main thread: on Linux)
KINDS = ["processes", "threads"] if FORKING else ["threads"]

PROMPTS = [s.prompt for s in read_jsonl(FIXTURES / "tiny_train.jsonl") + read_jsonl(FIXTURES / "tiny_val.jsonl")]
PROMPTS += ["你好", "什么是注意力机制？请详细说明", "为什么", "解释一下量化和蒸馏的区别", "问" * 200]


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> LoadedRun:
    return load_run(tiny_run)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Workers of each kind this computer has: forked processes (Linux) and threads (everywhere)."""
    monkeypatch.setattr(answer_workers, "processes_possible", lambda: request.param == "processes")
    return request.param


@pytest.mark.parametrize("beams", [1, 3])
def test_workers_give_the_answers_of_one_worker(run: LoadedRun, beams: int, kind: str) -> None:
    alone = greedy_answers(run.generator(beams=beams), PROMPTS, 16, batch_size=4, workers=1)
    for workers in (2, 3):
        side_by_side = greedy_answers(run.generator(beams=beams), PROMPTS, 16, batch_size=4, workers=workers)
        assert side_by_side == alone  # text, tokens, confidence, verdict and every per-token measure
    assert alone[-1].text == "" and alone[-1].tokens == 0  # too long to answer: no room, no crash
    assert len({len(run.generator().prompt_ids(p)) for p in PROMPTS[:-1]}) > 3  # several groups to share


def test_side_by_side_answers_sets_the_workers_and_each_computes_with_one_thread(
    run: LoadedRun, kind: str, tmp_path: Path
) -> None:
    torch.set_num_threads(2)
    calls = tmp_path / "calls.txt"  # one line per group: who answered it (a forked worker writes it too)
    try:
        assert ANSWER_WORKERS.get() == 1  # outside: one worker
        with side_by_side_answers() as workers:
            expected = 2 if kind == "processes" else 1  # no processes: the caller, with PyTorch's threads
            assert workers == expected and ANSWER_WORKERS.get() == expected and torch.get_num_threads() == 2
            generator = run.generator(beams=1)
            decode = generator.decode

            def recording(*args: object, **kwargs: object) -> object:
                with calls.open("a", encoding="utf-8") as f:  # (one short appended line: never interleaved)
                    f.write(f"{os.getpid()} {threading.current_thread().name} {torch.get_num_threads()}\n")
                return decode(*args, **kwargs)

            generator.decode = recording  # type: ignore[method-assign]
            greedy_answers(generator, PROMPTS, 8, batch_size=2)
            seen = {tuple(line.split()) for line in calls.read_text(encoding="utf-8").splitlines()}
            if kind == "processes":  # two other processes, one thread each
                assert len({pid for pid, _, _ in seen}) == 2 and all(threads == "1" for _, _, threads in seen)
                assert str(os.getpid()) not in {pid for pid, _, _ in seen}
            else:
                assert seen == {(str(os.getpid()), threading.current_thread().name, "2")}
            calls.unlink()
            greedy_answers(generator, PROMPTS, 8, batch_size=2, workers=2, processes=False)  # threads, asked for
            seen = {tuple(line.split()) for line in calls.read_text(encoding="utf-8").splitlines()}
            assert len(seen) == 2 and {(pid, threads) for pid, _, threads in seen} == {(str(os.getpid()), "1")}
            assert all(name.startswith("gptf-answer") for _, name, _ in seen)
        assert torch.get_num_threads() == 2 and ANSWER_WORKERS.get() == 1
        with pytest.raises(RuntimeError, match="boom"), side_by_side_answers():
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2 and ANSWER_WORKERS.get() == 1
    finally:
        torch.set_num_threads(1)


def test_an_error_in_a_group_reaches_the_caller_and_progress_counts_each_prompt_once(run: LoadedRun, kind: str) -> None:
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
    with pytest.raises(RuntimeError, match="third group"):  # (a forked worker counts its own calls)
        greedy_answers(generator, PROMPTS, 8, batch_size=2, workers=2)
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not FORKING, reason="worker processes are forked on Linux only")
def test_never_more_worker_processes_than_cores(run: LoadedRun, tmp_path: Path) -> None:
    """``gptf eval --threads 64`` on a 2-core laptop: 2 copies of the process, not 64."""
    calls = tmp_path / "calls.txt"
    generator = run.generator(beams=1)
    decode = generator.decode

    def recording(*args: object, **kwargs: object) -> object:
        with calls.open("a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
        return decode(*args, **kwargs)

    generator.decode = recording  # type: ignore[method-assign]
    answers = greedy_answers(generator, PROMPTS, 8, batch_size=1, workers=64, processes=True)
    groups = len(calls.read_text(encoding="utf-8").splitlines())
    assert groups > answer_workers.usable_cores()  # more groups than cores: the limit is what stops it
    assert 1 <= len(set(calls.read_text(encoding="utf-8").split())) <= answer_workers.usable_cores()
    assert [a.text for a in answers] == [a.text for a in greedy_answers(run.generator(beams=1), PROMPTS, 8, workers=1)]


@pytest.mark.skipif(not FORKING, reason="worker processes are forked on Linux only")
@pytest.mark.parametrize("where", ["pool", "fork"])
def test_where_no_worker_process_can_start_this_process_answers(
    run: LoadedRun, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A sandbox without /dev/shm (no semaphores for the pool) or with no processes left to fork: the same
    answers, from this process, and a warning that says why."""
    alone = greedy_answers(run.generator(beams=1), PROMPTS, 8, batch_size=2, workers=1)

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(38 if where == "pool" else 11, "refused here")

    if where == "pool":
        monkeypatch.setattr(answer_workers, "ProcessPoolExecutor", refused)
    else:
        monkeypatch.setattr(os, "fork", refused)
    with pytest.warns(RuntimeWarning, match="worker processes cannot start here .*refused here"):
        answers = greedy_answers(run.generator(beams=1), PROMPTS, 8, batch_size=2, workers=2, processes=True)
    assert answers == alone
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not FORKING, reason="worker processes are forked on Linux only")
def test_a_worker_process_that_dies_is_one_clear_error(run: LoadedRun) -> None:
    """The system may kill a worker (out of memory): a GptfError that says so, not a hang or a traceback."""
    from gptf.errors import GptfError

    generator = run.generator(beams=1)
    decode, parent = generator.decode, os.getpid()

    def dying(*args: object, **kwargs: object) -> object:
        if os.getpid() != parent:
            os._exit(9)  # (as a process killed by the system ends: no exception, no answer)
        return decode(*args, **kwargs)

    generator.decode = dying  # type: ignore[method-assign]
    with pytest.raises(GptfError, match=r"worker process .* stopped") as raised:
        greedy_answers(generator, PROMPTS, 8, batch_size=2, workers=2, processes=True)
    assert "--threads 1" in str(raised.value)
    assert not multiprocessing.active_children()


LOCKED_STDOUT = """
import io, os, sys, time
from gptf.decoding.answer_workers import side_by_side
parent = os.getpid()
class LockedInACopy(io.StringIO):
    def flush(self):  # as a stream whose lock a spinner's thread held at the fork: the copy waits forever
        if os.getpid() != parent:
            time.sleep(3600)
sys.stdout = LockedInACopy()
done = sorted(group[0] for group, _ in side_by_side([[0], [1], [2], [3]], lambda group: group, 2, processes=True))
os.write(2, f"answered {done}".encode())
"""


@pytest.mark.skipif(not FORKING, reason="worker processes are forked on Linux only")
def test_a_worker_does_not_wait_on_a_stream_locked_when_it_was_forked() -> None:
    """A worker writes to its own sys.stdout/sys.stderr: the copied ones may hold a lock forever (another
    thread of the caller, a progress spinner, may have been writing when the process was forked), and a
    worker flushes them when it ends. (In its own process, so that a hang fails the test, not the suite.)"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LOCKED_STDOUT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.endswith("answered [0, 1, 2, 3]"), done.stderr


@pytest.mark.skipif(not FORKING, reason="worker processes are forked on Linux only")
def test_an_interrupt_in_the_caller_stops_the_worker_processes(run: LoadedRun, kind: str) -> None:
    """Ctrl-C reaches the caller (the workers ignore it): the groups not started are dropped, the running
    ones finish, and no worker process is left behind."""
    answered: list[int] = []

    def interrupted(done: int) -> None:
        answered.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        greedy_answers(run.generator(beams=1), PROMPTS, 8, batch_size=2, workers=2, on_progress=interrupted)
    assert len(answered) == 1 and answered[0] < len(PROMPTS)
    assert not multiprocessing.active_children()


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
    with side_by_side_answers():
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
