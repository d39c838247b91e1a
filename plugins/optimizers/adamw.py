"""AdamW (Loshchilov & Hutter, 2019): Adam with weight decay applied directly to the
weights instead of through the gradient. The engine passes two parameter groups, so
biases and norm gains are not decayed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from gptf import hookimpl


def adamw(
    params: Iterable[dict[str, Any]],
    lr: float,
    betas: list[float] = [0.9, 0.95],  # noqa: B006 - read-only default, shown in gptf inspect
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    if len(betas) != 2:
        raise ValueError(f"betas must be two numbers, got {betas}")
    return torch.optim.AdamW(params, lr=lr, betas=(betas[0], betas[1]), eps=eps)


@hookimpl
def register_optimizers() -> dict[str, object]:
    return {"adamw": adamw}
