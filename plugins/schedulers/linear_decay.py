"""Linear warm-up, then a straight line down to ``min_lr_ratio`` of the peak at the last step.

The simplest decaying schedule; compare it with :mod:`warmup_cosine`, which stays near the
peak longer and then bends down.
"""

from __future__ import annotations

from gptf import hookimpl


class LinearDecay:
    def __init__(
        self, max_steps: int, warmup_ratio: float = 0.05, warmup_steps: int | None = None, min_lr_ratio: float = 0.1
    ) -> None:
        if not 0 <= warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.max_steps = max_steps
        self.warmup = warmup_steps if warmup_steps is not None else round(warmup_ratio * max_steps)
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.max_steps - self.warmup))
        return 1.0 - (1.0 - self.min_lr_ratio) * progress


@hookimpl
def register_schedulers() -> dict[str, type]:
    return {"linear_decay": LinearDecay}
