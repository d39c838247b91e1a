"""What the user sees while training: a live bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


class TrainingProgress:
    """Shows step, loss, eval loss, lr, tokens/s, elapsed and time left."""

    def __init__(self, console: Console, total_steps: int, start_step: int = 0) -> None:
        self.console = console
        self.total = total_steps
        self.live = console.is_terminal
        self.val_loss: float | None = None
        self.started = time.perf_counter()
        self.start_step = start_step
        self.progress: Progress | None = None
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  eval {task.fields[val]}  lr {task.fields[lr]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.progress.add_task(
                "train", total=total_steps, completed=start_step, loss="-", val="-", lr="-", tps="-"
            )

    def set_total(self, total_steps: int) -> None:
        """The run will train this many steps in all (fewer, to keep to its time budget)."""
        self.total = total_steps
        if self.progress is not None:
            self.progress.update(self.task, total=total_steps)

    def __enter__(self) -> TrainingProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, metrics: dict[str, Any], log_interval: int) -> None:
        if metrics.get("val_loss") is not None:
            self.val_loss = metrics["val_loss"]
        step = metrics["step"]
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=step,
                loss=_fmt(metrics["loss"]),
                val=_fmt(self.val_loss),
                lr=_fmt(metrics["lr"], ".2e"),
                tps=f"{metrics['tokens_per_s']:,.0f}",
            )
        elif step % log_interval == 0 or step == self.total or "val_loss" in metrics:
            elapsed = time.perf_counter() - self.started
            done = step - self.start_step
            left = elapsed / done * (self.total - step) if done else 0.0
            self.console.print(
                f"step {step}/{self.total}  loss {_fmt(metrics['loss'])}  eval {_fmt(self.val_loss)}  "
                f"lr {metrics['lr']:.2e}  {metrics['tokens_per_s']:,.0f} tok/s  "
                f"elapsed {elapsed:.0f}s  left {left:.0f}s",
                highlight=False,
            )
