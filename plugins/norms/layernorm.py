"""LayerNorm (Ba et al., 2016): subtract the mean, divide by the standard deviation,
then scale and shift. The original Transformer and GPT-2 use it."""

from __future__ import annotations

from torch import nn

from gptf import hookimpl


def layer_norm(dim: int, eps: float = 1e-5, bias: bool = True) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=eps, bias=bias)


@hookimpl
def register_norms() -> dict[str, object]:
    return {"layernorm": layer_norm}
