"""Micro-batches side by side: one step's gradient accumulation on several cores at once.

A step of the teacher recipe is 4 micro-batches of 4 samples, one after the other. With 2 cores,
PyTorch splits every operation of a micro-batch between 2 threads; but most operations of a model
this small touch a few thousand numbers, and the two threads spend much of each one waiting for
each other. So instead two *workers* (Python threads) each take whole micro-batches and compute
them with one PyTorch thread each, at the same time: no waiting inside an operation, and each core
keeps its own data in its own cache.

The gradients must add up as in the one-after-the-other loop, bit for bit. ``loss.backward()`` from
two threads would add into the same ``.grad`` tensors in whatever order the threads finish, so each
worker asks for its micro-batch's gradients on their own (``torch.autograd.grad``) and the calling
thread adds them into ``.grad`` in the micro-batches' order: first, second, third, fourth, exactly
the additions ``backward()`` makes in the loop (a test compares the weights after several steps).

Measured on the 2-core Zen 4 machine, teacher recipe (bf16), the two trainers side by side in one
process: 115.8 vs 129.6 ms per step, the same weights after 43 steps (``/tmp`` script; the README's
speed section has the benchmark). Two micro-batches in memory at once cost ~50 MB: the training
peak of ``benchmarks/train_memory.py`` was 542-583 MB in 9 runs against 509-519 one after the other.

Used where the result stays the same and the workers have cores: on a CPU, in one process (under
torchrun the gradients are added across processes inside ``backward()``), without ``torch.compile``,
without dropout (two threads drawing from one random generator would draw in a varying order), with
at least 2 PyTorch threads and 2 micro-batches per step; ``training.side_by_side: false`` turns it off.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import torch

from gptf.build.speed import one_pytorch_thread


def side_by_side_workers(
    *, enabled: bool, device: torch.device, distributed: bool, compiled: bool, dropout: float, micro_batches: int
) -> int:
    """How many workers compute a step's micro-batches (1: one after the other, in this thread)."""
    if not enabled or device.type != "cpu" or distributed or compiled or dropout > 0:
        return 1
    return max(1, min(torch.get_num_threads(), micro_batches))


def deal(count: int, workers: int) -> list[list[int]]:
    """Micro-batches ``0 .. count-1`` (sorted short to long) dealt to ``workers`` like cards, back
    and forth, so each worker gets a similar amount of work: 4 to 2 workers: [0, 3] and [1, 2]."""
    hands: list[list[int]] = [[] for _ in range(workers)]
    for i in range(count):
        turn, seat = divmod(i, workers)
        hands[seat if turn % 2 == 0 else workers - 1 - seat].append(i)
    return [hand for hand in hands if hand]


class SideBySide:
    """Computes a step's micro-batches on ``workers`` threads and adds their gradients in order."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def accumulate(
        self,
        count: int,
        loss_of: Callable[[int], torch.Tensor],
        parameters: Sequence[torch.nn.Parameter],
        region: Callable[[], contextlib.AbstractContextManager],
        backward_region: Callable[[], contextlib.AbstractContextManager],
    ) -> float:
        """Add the gradients of ``loss_of(i)`` for ``i`` in ``0 .. count-1`` into the parameters'
        ``.grad``, in that order; return the sum of the losses, added in the same order.

        Each worker computes its micro-batches inside one ``region()`` (the trainer's autocast: its
        bf16 weights are cast once per worker and step) and their gradients in ``backward_region()``."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gptf-micro-batch")
        done: queue.SimpleQueue = queue.SimpleQueue()  # (i, gradients, loss), or (-1, error, 0)

        def work(numbers: list[int]) -> None:
            try:
                with region():
                    for i in numbers:
                        loss = loss_of(i)
                        with backward_region():
                            grads = torch.autograd.grad(loss, parameters, allow_unused=True)
                        done.put((i, grads, loss.item()))
                        del loss, grads  # not kept alive through the next micro-batch (13.5 MB each here)
            except BaseException as error:  # handed to the calling thread, which raises it
                done.put((-1, error, 0.0))

        with one_pytorch_thread():  # each worker computes with one thread
            futures = [self._pool.submit(work, hand) for hand in deal(count, self.workers)]
            try:
                return self._add_in_order(count, done, parameters)
            finally:
                wait(futures)  # no worker is still computing when this returns (or raises)

    @staticmethod
    def _add_in_order(count: int, done: queue.SimpleQueue, parameters: Sequence[torch.nn.Parameter]) -> float:
        """Take the workers' results as they come and add them in the micro-batches' order."""
        waiting: dict[int, tuple[tuple[torch.Tensor | None, ...], float]] = {}
        total, next_i = 0.0, 0
        while next_i < count:
            i, grads, loss = done.get()
            if i < 0:
                raise grads
            waiting[i] = (grads, loss)
            del grads  # only ``waiting`` holds a micro-batch's gradients, until they are added
            while next_i in waiting:  # add in the micro-batches' order, as backward() would
                grads, loss = waiting.pop(next_i)
                total += loss
                for parameter, grad in zip(parameters, grads, strict=True):
                    if grad is None:
                        continue
                    if parameter.grad is None:
                        parameter.grad = grad
                    else:
                        parameter.grad.add_(grad)
                del grads, grad
                next_i += 1
        return total

    def close(self) -> None:
        """Let the worker threads end."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
