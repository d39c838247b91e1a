"""The training loop: next-token prediction on the answer tokens, with AdamW.

One optimizer step =
    1. take the next ``batch_size`` samples of the seeded data stream (grouped by length
       with ``training.bucket_batches``, see :func:`gptf.data.step_samples`);
    2. split them into micro-batches (gradient accumulation) and, for each one,
       forward -> cross-entropy on the answer tokens -> backward (gradients add up);
       on a CPU with several cores, several micro-batches at once (:mod:`gptf.train.side_by_side`);
    3. clip the gradient norm, set the learning rate from the schedule, update.

The loss of every micro-batch is divided by the answer-token count of the *whole*
batch, so the accumulated gradient is exactly the gradient of the full batch. (With
``training.answer_start_tokens`` the first answer tokens weigh more: then it is a weighted
mean, divided by the batch's sum of weights; see :mod:`gptf.train.answer_weights`.)

Under torchrun every process takes its share of each step's samples and the gradients are
added up across processes once per step: see :mod:`gptf.train.distributed` (``self.world``;
in one process every ``world`` call below changes nothing).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from gptf.build.allocator import keep_freed_memory
from gptf.build.devices import model_device
from gptf.build.speed import choose_precision
from gptf.data import IGNORE, TokenizedSplit, micro_batches, pad_batch, step_samples
from gptf.errors import TrainingStopped
from gptf.interfaces import Callback
from gptf.model import GPT
from gptf.recipe import TrainingConfig
from gptf.train.answer_weights import answer_token_weights, loss_weighting
from gptf.train.distributed import World
from gptf.train.side_by_side import SideBySide, side_by_side_workers
from gptf.train.stability import StabilityMonitor, hint


@attrs.define
class TrainState:
    """Everything that changes while training (and so must be saved to resume)."""

    step: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    tokens_seen: int = 0
    elapsed_s: float = 0.0


class Trainer:
    def __init__(
        self,
        *,
        config: TrainingConfig,
        model: GPT,
        train: TokenizedSplit,
        val: TokenizedSplit | None,
        pad_id: int,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float],
        callbacks: Sequence[Callback] = (),
        log: Callable[[dict[str, Any]], None] | None = None,
        world: World | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.train_split = train
        self.lengths = train.lengths  # tokens per sample, for length bucketing
        self.val_split = val
        self.pad_id = pad_id
        self.optimizer = optimizer
        self.schedule = schedule
        self.callbacks = list(callbacks)
        self.log = log or (lambda record: None)
        self.state = TrainState()
        self.stop_requested = False  # set from a signal handler: stop after this step
        self.world = world or World()  # one process, or this one's place among torchrun's
        self.world.check_batch(config.batch_size)
        model.checkpoint_blocks = config.activation_checkpointing  # recompute activations in backward
        self._wrapped = self.world.wrap(model)  # DDP in several processes, else the model itself
        self._forward = torch.compile(self._wrapped) if config.compile else self._wrapped
        self.stability = StabilityMonitor(config.lr)  # loss spikes, divergence, NaN (gptf.train.stability)
        self.device = model_device(model)  # batches are built on the CPU and moved here
        # every step frees and reallocates the same memory: keep it instead of returning it (gptf.build.allocator)
        self.allocator = keep_freed_memory() if self.device.type == "cpu" else "the device's own"
        # fp32 or bf16 as the recipe says; "auto" looks at the hardware and times both (about 1 s)
        c = model.config
        self.precision = choose_precision(
            config.precision, self.device, n_embd=c.n_embd, seq_len=c.seq_len, batch=config.micro_batch
        )
        # bf16 matmuls on a CPU run through oneDNN, which builds and keeps kernels and buffers
        # for every new shape: with each batch padded to its own length, memory grew by ~450 MB
        # in 20 steps. Widths rounded up to a multiple of 16 keep the shapes few (fp32: exact width).
        self.pad_multiple = 16 if self.precision.precision == "bf16" and self.device.type == "cpu" else 1
        # the micro-batches of a step computed by several threads at once, one PyTorch thread each
        # (gptf.train.side_by_side): the same weights, bit for bit; 1 worker: one after the other
        workers = side_by_side_workers(
            enabled=config.side_by_side,
            device=self.device,
            distributed=self.world.distributed,
            compiled=config.compile,
            dropout=c.dropout,
            micro_batches=math.ceil(config.batch_size / config.micro_batch),
        )
        self.side_by_side = SideBySide(workers)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def without_autocast(self) -> contextlib.AbstractContextManager:
        """Inside :meth:`autocast`'s region: autocast off, its cached bf16 weights kept."""
        if self.precision.precision == "bf16":
            return torch.autocast(self.device.type, enabled=False)
        return contextlib.nullcontext()

    def loss_weights(self, y: torch.Tensor) -> torch.Tensor | None:
        """Each target's weight in the training loss, or None where every answer token counts
        once (``training.answer_start_tokens`` / ``answer_start_weight``: gptf.train.answer_weights)."""
        cfg = self.config
        if loss_weighting(cfg) is None:
            return None
        return answer_token_weights(y, cfg.answer_start_tokens, cfg.answer_start_weight)

    def loss_sum(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        forward: Callable | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Summed cross-entropy over the answer tokens of one padded batch (``weights``: each
        token's loss times its weight, see :meth:`loss_weights`)."""
        x, y = x.to(self.device), y.to(self.device)
        with self.autocast():
            logits = (forward or self._forward)(x)  # (B, T, V)
        scores, targets = logits.float().flatten(0, 1), y.flatten()
        if weights is None:
            return F.cross_entropy(scores, targets, ignore_index=IGNORE, reduction="sum")
        losses = F.cross_entropy(scores, targets, ignore_index=IGNORE, reduction="none")  # one per position
        return (losses * weights.to(self.device).flatten()).sum()

    def train_step(self) -> dict[str, Any]:
        """One optimizer step; returns its metrics."""
        cfg, step, world = self.config, self.state.step, self.world
        started = time.perf_counter()
        lr = cfg.lr * self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        indices = step_samples(self.lengths, cfg.seed, step, cfg.batch_size, cfg.bucket_batches)
        indices = world.share(indices, self.lengths)  # this process's part (in one process: all)
        batches = micro_batches(
            self.train_split, indices, cfg.micro_batch, self.pad_id, self.pad_multiple, self.model.config.seq_len
        )
        answer_tokens, real_tokens = world.sum_counts(  # over the whole batch, every process's part
            sum(int((y != IGNORE).sum()) for _, y in batches), sum(len(self.train_split.inputs[i]) for i in indices)
        )
        weights = [self.loss_weights(y) for _, y in batches]  # None: every answer token counts once
        divisor = answer_tokens if weights[0] is None else world.sum(sum(float(w.sum()) for w in weights))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.side_by_side.workers > 1:  # several micro-batches at once, gradients added in order
            total = self.side_by_side.accumulate(
                len(batches),
                lambda i: self.loss_sum(*batches[i], weights=weights[i]) / divisor,
                [p for p in self.model.parameters() if p.requires_grad],
                self.autocast,
                self.without_autocast,
            )
        else:
            total = 0.0
            # One bf16 region for all micro-batches: autocast keeps each weight's bf16 copy until its
            # outermost region ends, so the weights are cast once per step instead of once per micro-batch.
            # (The backward passes run with autocast off; the optimizer changes the weights after the region.)
            with self.autocast():
                for number, ((x, y), w) in enumerate(zip(batches, weights, strict=True), start=1):
                    with world.no_sync(self._wrapped, last=number == len(batches)):  # share gradients once per step
                        loss = self.loss_sum(x, y, weights=w) / divisor
                        with self.without_autocast():
                            loss.backward()
                    total += loss.item()
        total = world.sum(total)  # the whole batch's loss, the same in every process
        self._stop_if_not_finite(step + 1, lr, "loss", total)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        self._stop_if_not_finite(step + 1, lr, "gradient norm", grad_norm)
        self.optimizer.step()
        seconds = time.perf_counter() - started
        self.state.step = step + 1
        self.state.train_loss = total
        self.state.tokens_seen += real_tokens
        self.state.elapsed_s += seconds
        return {
            "step": self.state.step,
            "loss": total,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": real_tokens / seconds if seconds > 0 else 0.0,
            "elapsed_s": self.state.elapsed_s,
        }

    def _stop_if_not_finite(self, step: int, lr: float, what: str, value: float) -> None:
        if math.isfinite(value):
            return
        event = self.stability.observe({"step": step, "loss": value, "lr": lr, "grad_norm": value})
        advice = hint([event], self.config.lr) if event else "lower training.lr"
        raise TrainingStopped(
            f"training stopped at step {step}: the {what} is {value} (not a finite number)",
            hint=f"{advice}; the last saved checkpoint is kept",
        )

    @torch.no_grad()
    def evaluate(self, split: TokenizedSplit | None = None, batch_size: int = 16) -> float | None:
        """Mean cross-entropy per answer token over a whole split (default: val).

        In batches of 16 rows: measured on the teacher's val split, batches of 32 took 52 MB more
        peak memory (the (32, 128, 824) scores and their softmax) for no gain in time (0.45 vs 0.43 s)."""
        split = split if split is not None else self.val_split
        if split is None:
            return None
        self.model.eval()
        order = sorted(range(len(split)), key=lambda i: len(split.inputs[i]))
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = [split.inputs[i] for i in chunk], [split.targets[i] for i in chunk]
            x, y = pad_batch(*rows, self.pad_id, self.pad_multiple, self.model.config.seq_len)
            total += float(self.loss_sum(x, y, forward=self.model))
            count += int((y != IGNORE).sum())
        self.model.train()
        return total / max(count, 1)

    def _eval_and_report(self) -> None:
        started = time.perf_counter()
        val = self.evaluate()
        self.state.val_loss = val
        if val is not None and (self.state.best_val_loss is None or val < self.state.best_val_loss):
            self.state.best_val_loss = val
        record = {"step": self.state.step, "val_loss": val, "eval_s": time.perf_counter() - started}
        self.log(record)
        for callback in self.callbacks:
            callback.on_eval(self, record)

    def _stop_agreed(self) -> bool:
        """Stop before the next step? Every process must decide the same (a signal may reach one
        process of a torchrun a step before another), so a request in any one stops them all.
        Returns the agreed answer, never this process's flag: a signal may arrive meanwhile."""
        agreed = self.world.any(self.stop_requested)
        if agreed:
            self.stop_requested = True  # (never set back to False: that could lose a request)
        return agreed

    def fit(self, on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainState:
        """Train until ``max_steps`` (or a requested stop); evaluate every ``eval_interval``. A callback
        may give the trainer another ``config`` (fewer steps: :mod:`gptf.train.time_budget`): it is read
        afresh at every step."""
        for callback in self.callbacks:
            callback.on_train_start(self)
        try:
            while self.state.step < self.config.max_steps and not self._stop_agreed():
                cfg = self.config
                metrics = self.train_step()
                event = self.stability.observe(metrics)
                if event is not None:  # logged whatever the interval, so metrics.jsonl shows where
                    metrics = {**metrics, "stability": f"{event.kind}: {event.detail}"}
                if event or self.state.step % cfg.log_interval == 0 or self.state.step == cfg.max_steps:
                    self.log(metrics)
                last = self.state.step == cfg.max_steps
                if self.world.is_main and (self.state.step % cfg.eval_interval == 0 or last):
                    self._eval_and_report()
                    metrics = {**metrics, "val_loss": self.state.val_loss}
                for callback in self.callbacks:
                    callback.on_step_end(self, metrics)
                if on_step is not None:
                    on_step(metrics)
        finally:
            self.side_by_side.close()
            for callback in self.callbacks:
                callback.on_train_end(self)
        return self.state
