"""A constant learning rate, after an optional linear warm-up."""

from __future__ import annotations

from gptf import hookimpl


class Constant:
    def __init__(self, max_steps: int, warmup_steps: int = 0) -> None:
        self.warmup = warmup_steps

    def __call__(self, step: int) -> float:
        return (step + 1) / self.warmup if step < self.warmup else 1.0


@hookimpl
def register_schedulers() -> dict[str, type]:
    return {"constant": Constant}
