"""Linear warm-up, then cosine decay.

Warm-up: the learning rate climbs from ~0 to its peak, so the first, noisy updates of a
random model are small. Cosine decay: it then glides down to ``min_lr_ratio`` of the peak,
so the last steps polish instead of jumping around.
"""

from __future__ import annotations

import math

from gptf import hookimpl


class WarmupCosine:
    def __init__(
        self,
        max_steps: int,
        warmup_ratio: float = 0.05,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.1,
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
        progress = (step - self.warmup) / max(1, self.max_steps - self.warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


@hookimpl
def register_schedulers() -> dict[str, type]:
    return {"warmup_cosine": WarmupCosine}
