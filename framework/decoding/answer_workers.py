"""Many groups of prompts answered at the same time, one per CPU core.

Answering the val questions runs the model ~2,000 times on a few tokens, and between the calls
Python does the decoding constraints, the memory's vote and beam search's bookkeeping. Python runs
one thread at a time (the GIL), and a small model's operations are so short that two threads mostly
wait for each other. So where it is safe, each worker is a *process* of its own, with its own Python.
Measured on 2 cores, the teacher run's 230 val questions as the run answers them (beam search, 4
beams, with the memory; ``python benchmarks/generation_speed.py --ckpt checkpoints/teacher_3m
--no-compile --no-naive --repeats 2``): 10.6 s one group after the other (2 PyTorch threads), 6.9 s
with 2 worker processes, 13.3 s with 2 worker threads of one thread each (greedy: 3.3 / 2.2 / 4.5 s).

A worker process is a ``fork`` of this one, so it starts with the model, the tokenizer and the
taught memory already in memory (nothing is copied until it is changed, nothing is saved to disk
or sent). Only each group's prompt indices go to a worker and its finished answers come back.
Forking is safe on Linux from the main thread; elsewhere (macOS, Windows, a web server's request
thread) one worker, the caller, answers with PyTorch's threads. A worker computes with one PyTorch
thread and ignores Ctrl-C: the caller gets the ``KeyboardInterrupt``, drops the groups not started
and waits for the running ones (a second at most).

A group's answers do not depend on which worker answers it or when, so the answers are the same
with any number of workers and either kind (tests check it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from typing import Any, TypeVar

import torch

from gptf.build.speed import one_pytorch_thread, usable_cores
from gptf.errors import GptfError

Result = TypeVar("Result")

#: How many groups :func:`gptf.generate.greedy_answers` answers at the same time (set by
#: :func:`side_by_side_answers`).
ANSWER_WORKERS: ContextVar[int] = ContextVar("answer_workers", default=1)


@contextlib.contextmanager
def side_by_side_answers() -> Iterator[int]:
    """Answer many prompts by as many worker processes as PyTorch has threads (``training.threads``,
    ``--threads``, else one per core), each computing with one thread; yields how many. Where workers
    cannot be forked (:func:`processes_possible`): one worker, this thread, with PyTorch's threads
    (worker *threads* were slower than that here: 13.3 vs 10.6 s for 230 val questions by beam search)."""
    workers = torch.get_num_threads() if processes_possible() else 1
    token = ANSWER_WORKERS.set(workers)
    try:
        yield workers
    finally:
        ANSWER_WORKERS.reset(token)


def processes_possible() -> bool:
    """Whether workers may be forked processes here: on Linux (macOS's system libraries are not
    safe to fork, Windows cannot), from the main thread (forking copies only the calling thread;
    from a server's request thread another one may hold a lock the copy then waits for forever)."""
    return (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.current_thread() is threading.main_thread()
    )


def side_by_side(
    groups: Sequence[list[int]],
    answer: Callable[[list[int]], Result],
    workers: int,
    *,
    processes: bool | None = None,
) -> Iterator[tuple[list[int], Result]]:
    """``(group, answer(group))`` for every group, by ``workers`` workers at once, in the order they
    finish (one worker: one after the other, in order, in this thread). ``processes``: forked worker
    processes (default: where :func:`processes_possible`), else threads. The caller's loop runs in
    the calling thread, so whatever it records needs no lock. An error in a group is raised here,
    and the groups not yet started are dropped."""
    if processes is None:
        processes = processes_possible()
    # never more processes than cores (``--threads 64`` on 2 cores: 2 copies, not 64)
    workers = min(workers, len(groups), usable_cores() if processes else workers)
    if workers <= 1:
        yield from _one_after_another(groups, answer)
        return
    if not processes:
        with one_pytorch_thread():  # each worker thread computes with one thread
            pool = ThreadPoolExecutor(workers, thread_name_prefix="gptf-answer")
            yield from _finished(pool, {pool.submit(answer, group): group for group in groups})
        return
    global _forked_task
    _forked_task = answer  # what the forked workers call: inherited by the fork, never pickled
    try:
        try:
            pool, futures = _started(workers, groups)
        except OSError as error:  # no worker can start here (a sandbox without /dev/shm, no processes left)
            warnings.warn(
                f"answering in this process: worker processes cannot start here ({error})", RuntimeWarning, stacklevel=3
            )
            yield from _one_after_another(groups, answer)
            return
        yield from _finished(pool, futures)
    finally:
        _forked_task = None


def _one_after_another(
    groups: Sequence[list[int]], answer: Callable[[list[int]], Result]
) -> Iterator[tuple[list[int], Result]]:
    for group in groups:
        yield group, answer(group)


def _started(workers: int, groups: Sequence[list[int]]) -> tuple[Executor, dict[Future, list[int]]]:
    """A pool of ``workers`` forked processes, every group handed to it (the processes start here)."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_start)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a process that has threads (PyTorch's) may leave the copy
            # waiting on a lock one of them held; PyTorch's own pools are made safe to fork (the worker
            # runs with one thread, as PyTorch's DataLoader workers do) and a worker opens its own
            # stdout and stderr (_worker_start)
            warnings.filterwarnings(
                "ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning
            )
            return pool, {pool.submit(_call_forked_task, group): group for group in groups}
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise


def _finished(pool: Executor, futures: dict[Future, list[int]]) -> Iterator[tuple[list[int], Any]]:
    """``(group, result)`` as the pool finishes them; then the pool is shut down (the groups not started dropped)."""
    with pool:
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool as error:  # a worker died: the system killed it (out of memory?)
                    raise GptfError(
                        "a worker process answering the questions stopped without finishing (killed: out of memory?)",
                        hint="answer with fewer workers: --threads 1 (gptf eval), training.threads=1 (gptf run)",
                    ) from error
                yield futures[future], result
        finally:
            for future in futures:
                future.cancel()  # (a group already running finishes; the pool waits for it)


_forked_task: Callable[[list[int]], Any] | None = None


def _worker_start() -> None:
    """In each forked worker, first: one PyTorch thread, Ctrl-C left to the caller, and its own
    ``sys.stdout``/``sys.stderr`` on the same terminal. The copied ones may be locked forever: a fork
    copies a lock as it is, and another thread of the caller (a progress spinner) may have been
    writing at that moment; a worker flushes them when it ends and would wait for that lock forever."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (a notebook's, a test's capture)
            fd = 1 if name == "stdout" else 2
        encoding = getattr(stream, "encoding", None) or "utf-8"
        setattr(sys, name, open(fd, "w", encoding=encoding, errors="replace", closefd=False))  # noqa: SIM115


def _call_forked_task(group: list[int]) -> Any:
    if _forked_task is None:  # (a worker started by anything but side_by_side)
        raise RuntimeError("no task to answer: the worker was not forked by side_by_side")
    return _forked_task(group)
