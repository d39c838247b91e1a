"""Warm-up, stable, decay ("WSD", as in MiniCPM, Hu et al., 2024).

    warm-up   first ``warmup_ratio`` of the steps: climb linearly to the peak
    stable    stay at the peak
    decay     last ``decay_ratio`` of the steps: fall linearly to ``min_lr_ratio``

The long flat middle means a run can be extended (or a checkpoint branched off) without
committing to the total length in advance: only the short final decay depends on it.
"""

from __future__ import annotations

from gptf import hookimpl


class WarmupStableDecay:
    def __init__(
        self, max_steps: int, warmup_ratio: float = 0.05, decay_ratio: float = 0.2, min_lr_ratio: float = 0.1
    ) -> None:
        if not 0 <= warmup_ratio < 1 or not 0 < decay_ratio <= 1 or warmup_ratio + decay_ratio > 1:
            raise ValueError(
                f"need 0 <= warmup_ratio < 1, 0 < decay_ratio <= 1 and warmup_ratio + decay_ratio <= 1; "
                f"got warmup_ratio={warmup_ratio}, decay_ratio={decay_ratio}"
            )
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup = round(warmup_ratio * max_steps)
        self.decay = max(1, round(decay_ratio * max_steps))
        self.decay_start = max_steps - self.decay
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if step < self.decay_start:
            return 1.0
        progress = min(1.0, (step - self.decay_start) / self.decay)
        return 1.0 - (1.0 - self.min_lr_ratio) * progress


@hookimpl
def register_schedulers() -> dict[str, type]:
    return {"warmup_stable_decay": WarmupStableDecay}
