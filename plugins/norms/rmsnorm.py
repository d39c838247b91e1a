"""RMSNorm (Zhang & Sennrich, 2019): divide by the root-mean-square of the features and
scale. Unlike LayerNorm it does not subtract the mean and has no bias: cheaper, and in
practice just as stable."""

from __future__ import annotations

import torch
from torch import nn

from gptf import hookimpl


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms_inverse = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return x * rms_inverse * self.weight


@hookimpl
def register_norms() -> dict[str, type]:
    return {"rmsnorm": RMSNorm}
