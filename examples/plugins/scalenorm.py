"""ScaleNorm (Nguyen & Salazar, 2019): a gptf plugin in one file.

RMSNorm learns one gain per feature (256 numbers for d = 256). ScaleNorm learns a single
number g and puts every token's vector on a sphere of radius g:

    ScaleNorm(x) = g * x / ||x||

Use it without installing anything: name the file in a recipe (see scalenorm.yaml)::

    plugins: [./scalenorm.py]
    model: {norm: scalenorm}

and check it against the contract first: ``gptf plugin check examples/plugins/scalenorm.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from gptf import hookimpl


class ScaleNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        # Start at sqrt(dim): then the output has about the same size as RMSNorm's (unit RMS).
        self.gain = nn.Parameter(torch.tensor(dim**0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.norm(dim=-1, keepdim=True).clamp(min=self.eps)  # each token's own vector: (..., 1)
        return self.gain * x / length


@hookimpl
def register_norms() -> dict[str, type]:
    return {"scalenorm": ScaleNorm}
