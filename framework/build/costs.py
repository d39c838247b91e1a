"""What a model costs: FLOPs per token and training memory, worked out from its shape.

Shown by ``gptf inspect``. These are estimates to size a run before starting it (will it fit
in memory? how long will it take at X FLOP/s?), not measurements.

FLOPs per token
---------------
Multiplying a token's vector by a (d x k) weight matrix costs 2·d·k floating-point operations
(one multiply and one add per weight). In the forward pass a token meets every weight once, so

    forward (inference)   2·N + 4·L·T·d
    training              6·N + 12·L·T·d     (the backward pass costs about twice the forward:
                                              gradients for the activations and for the weights)

* N: the parameters a token is multiplied by: every parameter except the embedding table,
  which is only looked up. With tied embeddings that table is also the output layer, a real
  matrix multiply, so it is counted once.
* 4·L·T·d, the attention term: in each of L layers a token's query meets T keys (2·T·d) and
  mixes T values (2·T·d); d = n_head · head size. T is the context: ``seq_len`` at most, and a
  causal mask lets a fused kernel skip about half of it. At seq_len 128 and d = 256 it is
  small next to 2·N; it grows with the context.
* Generating one token with the KV cache at t tokens so far: 2·N + 4·L·t·d.

This is the convention of PaLM's model-FLOPs utilisation (Chowdhery et al., 2022, appendix B).

Training memory per micro-batch
-------------------------------
* weights 4 bytes per parameter (fp32), gradients 4, AdamW's two moments 8: 16 bytes per
  parameter. bf16 autocast adds a bf16 copy of the weights (2 bytes per parameter).
* activations: what the forward pass keeps for the backward pass, per token of each layer of
  the reference block (fused attention, MLP widened m times): the norms' inputs (2·d), the
  inputs of the qkv, output and MLP layers (3·d), q, k, v (3·d), the attention output (d),
  the MLP's widened middle before and after its activation (2·m·d): (9 + 2·m)·d values, 4
  bytes each in fp32 (about 2 under bf16 autocast). Plus the logits and their softmax for
  the loss: 2·V values of 4 bytes per token. A micro-batch of B rows padded to T tokens
  keeps B·T of each.
* activation checkpointing keeps only each block's input (d values per layer) and
  recomputes one block at a time in the backward pass: L·d + (9 + 2·m)·d per token.

Real use is higher by the allocator's slack and temporary buffers; ``benchmarks/gpu_check.py``
compares the estimate with the peak a GPU measures.
"""

from __future__ import annotations

import attrs
from torch import nn

from gptf.model import GPT


@attrs.frozen
class Flops:
    matmul_parameters: int  # N: the parameters a token is multiplied by
    attention_per_token: int  # 4·L·T·d at T = seq_len
    context: int  # T

    @property
    def forward(self) -> int:
        return 2 * self.matmul_parameters + self.attention_per_token

    @property
    def training(self) -> int:
        return 3 * self.forward


def matmul_parameters(model: GPT) -> int:
    """N: every parameter except the embedding lookups (a tied table counts once, as the output layer)."""
    total = sum(p.numel() for p in model.parameters())
    lookups = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)}
    head = model.head.weight
    return total - sum(n for key, n in lookups.items() if key != id(head))


def flops_per_token(model: GPT, context: int | None = None) -> Flops:
    c = model.config
    context = context or c.seq_len
    return Flops(matmul_parameters(model), 4 * c.n_layer * context * c.n_embd, context)


@attrs.frozen
class TrainingMemory:
    """Bytes, for one micro-batch of ``rows`` x ``tokens``."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    rows: int
    tokens: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def training_memory(
    model: GPT, rows: int, tokens: int, *, bf16: bool = False, checkpointing: bool = False
) -> TrainingMemory:
    """The estimate above, for a micro-batch of ``rows`` sequences of ``tokens`` tokens."""
    c = model.config
    parameters = sum(p.numel() for p in model.parameters())
    block = (9 + 2 * c.mlp_ratio) * c.n_embd  # values kept per token by one block
    kept = c.n_layer * c.n_embd + block if checkpointing else c.n_layer * block
    per_token = kept * (2 if bf16 else 4) + 2 * c.vocab_size * 4  # + logits and softmax, fp32
    return TrainingMemory(
        weights=parameters * (6 if bf16 else 4),  # + a bf16 copy under autocast
        gradients=parameters * 4,
        optimizer=parameters * 8,
        activations=rows * tokens * per_token,
        rows=rows,
        tokens=tokens,
    )


def human(count: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'; bytes with unit='B' -> '1.2 GiB'."""
    if unit == "B":
        for name, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if count >= size:
                return f"{count / size:.1f} {name}"
        return f"{count:.0f} B"
    for name, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {name}"
    return f"{count:.0f}"
