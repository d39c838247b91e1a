"""RMSNorm (Zhang & Sennrich, 2019): divide by the root-mean-square of the features and
scale. Unlike LayerNorm it does not subtract the mean and has no bias: cheaper, and in
practice just as stable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptf import hookimpl


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x²) + eps) * weight, as PyTorch's one call (same numbers, less overhead)
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


@hookimpl
def register_norms() -> dict[str, type]:
    return {"rmsnorm": RMSNorm}
