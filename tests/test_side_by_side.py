"""Micro-batches side by side (gptf.train.side_by_side): several threads, the same weights.

* with 2 threads the step's micro-batches run on 2 workers of 1 thread each, and after several steps
  the weights, losses and gradient norms are those of the one-after-the-other loop, bit for bit
  (fp32 and bf16, with the answer-start weighting and gradient clipping of the teacher recipe, and
  with activation checkpointing);
* the micro-batches are dealt so that each worker gets long and short ones;
* it stays off where the result could change or nothing is gained: ``side_by_side: false``, one
  thread, one micro-batch, dropout, torch.compile, several processes, another device;
* an error in a worker reaches the caller, the thread setting comes back, no worker is left running.
No timing here: speed is measured by ``benchmarks/train_speed.py``.
"""

from __future__ import annotations

import threading

import pytest
import torch
from test_performance_equivalence import make_trainer, tokenizer  # noqa: F401  (the tokenizer fixture)

from gptf.train.side_by_side import SideBySide, deal, side_by_side_workers


@pytest.fixture
def two_threads() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize(("precision", "recompute"), [("fp32", False), ("bf16", False), ("bf16", True)])
def test_side_by_side_trains_the_same_weights_bit_for_bit(tokenizer, precision: str, recompute: bool) -> None:  # noqa: F811
    settings = {
        "batch_size": 8, "micro_batch": 2, "precision": precision, "grad_clip": 1.0,
        "answer_start_tokens": 2, "answer_start_weight": 3.0, "activation_checkpointing": recompute,
    }  # fmt: skip
    together = make_trainer(tokenizer, **settings)
    alone = make_trainer(tokenizer, side_by_side=False, **settings)
    assert (together.side_by_side.workers, alone.side_by_side.workers) == (2, 1)
    threads: set[str] = set()
    loss_sum = together.loss_sum

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        threads.add(threading.current_thread().name)
        assert torch.get_num_threads() == 1  # each worker computes with one thread
        return loss_sum(*args, **kwargs)

    together.loss_sum = recording  # type: ignore[method-assign]
    for _ in range(4):
        a, b = together.train_step(), alone.train_step()
        assert (a["loss"], a["grad_norm"]) == (b["loss"], b["grad_norm"])
    assert len(threads) == 2 and all(name.startswith("gptf-micro-batch") for name in threads)
    assert torch.get_num_threads() == 2  # put back after every step
    for mine, theirs in zip(together.model.parameters(), alone.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    together.side_by_side.close()


def test_micro_batches_are_dealt_long_and_short_to_each_worker() -> None:
    assert deal(4, 2) == [[0, 3], [1, 2]]
    assert deal(8, 2) == [[0, 3, 4, 7], [1, 2, 5, 6]]
    assert deal(3, 2) == [[0], [1, 2]]
    assert deal(1, 2) == [[0]]
    assert sorted(i for hand in deal(7, 3) for i in hand) == list(range(7))


@pytest.mark.usefixtures("two_threads")
def test_it_stays_off_where_the_result_could_change_or_nothing_is_gained() -> None:
    cpu = torch.device("cpu")
    on = {"enabled": True, "device": cpu, "distributed": False, "compiled": False, "dropout": 0.0, "micro_batches": 4}
    assert side_by_side_workers(**on) == 2
    assert side_by_side_workers(**{**on, "micro_batches": 1}) == 1
    for off in ({"enabled": False}, {"distributed": True}, {"compiled": True}, {"dropout": 0.1}):
        assert side_by_side_workers(**{**on, **off}) == 1, off
    assert side_by_side_workers(**{**on, "device": torch.device("meta")}) == 1
    torch.set_num_threads(1)
    assert side_by_side_workers(**on) == 1


@pytest.mark.usefixtures("two_threads")
def test_an_error_in_a_worker_reaches_the_caller_and_every_worker_has_stopped() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    running: list[int] = []

    def loss_of(i: int) -> torch.Tensor:
        running.append(i)
        if i == 2:
            raise ValueError("micro-batch 2 failed")
        return (weight * i).sum()

    workers = SideBySide(2)
    with pytest.raises(ValueError, match="micro-batch 2"):
        workers.accumulate(4, loss_of, [weight], torch.enable_grad, torch.enable_grad)
    assert torch.get_num_threads() == 2
    assert sorted(running) == [0, 1, 2, 3]  # the other worker finished its micro-batches before the raise
    weight.grad = None
    assert (
        workers.accumulate(3, lambda i: (weight * (i + 1)).sum(), [weight], torch.enable_grad, torch.enable_grad)
        == 18.0
    )
    assert weight.grad.tolist() == [6.0, 6.0, 6.0]  # 1 + 2 + 3, added in order
    workers.close()
