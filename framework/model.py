"""The GPT itself: a decoder-only Transformer, readable top to bottom.

    token ids ─▶ embedding ─▶ [Block] × n_layer ─▶ final norm ─▶ output layer ─▶ logits

    Block (model.block: prenorm, the default, in plugins/blocks/prenorm.py):
            x = x + Attention(Norm(x))      look at earlier tokens
            x = x + MLP(Norm(x))            think about each token on its own

While generating, a :class:`KVCache` keeps the keys and values of the tokens seen so far,
so each new token costs one short forward pass (``GPT.new_cache`` makes one).

The swappable parts (positional encoding, norm, attention core, MLP, block layout) arrive
already built, as arguments; this file never names a concrete one. The shapes in comments use
B = batch, T = time (tokens), C = channels (n_embd), H = heads, D = head size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import attrs
import torch
import torch.utils.checkpoint
from torch import nn

from gptf.interfaces import AttentionContext, PositionalEncoding, make_dropout, mark_residual_output


@attrs.frozen
class GPTConfig:
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    seq_len: int
    n_kv_head: int
    mlp_ratio: int = 4
    bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@attrs.frozen
class GPTParts:
    """Factories for the swappable parts; each call builds a fresh module."""

    positional: PositionalEncoding
    make_norm: Callable[[], nn.Module]
    make_attention: Callable[[], nn.Module]
    make_mlp: Callable[[], nn.Module]
    make_block: Callable[[nn.Module, nn.Module], nn.Module]  # (attention, mlp) -> a Block


class KVCache:
    """Generation without recomputing the past.

    Without it, producing token n means running the model over all n tokens again. But the
    keys and values of earlier tokens never change (causal mask!), so we keep them in a
    preallocated buffer and feed the model only the newest token: each step then costs O(n)
    instead of O(n^2). Make one with :meth:`GPT.new_cache`.
    """

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.layer_keys = self.keys.unbind(0)  # one (B, H_kv, max_len, D) view per layer
        self.layer_values = self.values.unbind(0)
        self.length = 0  # positions filled so far
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, H_kv, T, D) for ``layer``; return all keys/values so far."""
        T = k.size(-2)
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} > {self.max_len} positions")
        keys, values = self.layer_keys[layer], self.layer_values[layer]
        keys.narrow(2, self.length, T).copy_(k)  # positions length .. end-1
        values.narrow(2, self.length, T).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def advance(self, n: int) -> None:
        """Called by the model once every layer has stored the new ``n`` positions."""
        self.length += n

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on, as if only the first ``length`` had been fed.

        Draft-and-verify decoding (gptf.generate) feeds guessed tokens and keeps only those the
        model agreed with. Nothing is erased: the next :meth:`update` writes over the rest."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a KV cache of {self.length} positions to {length}")
        self.length = length

    def copy_rows(self, sources: list[int], targets: list[int]) -> None:
        """Overwrite the filled positions of rows ``targets`` with those of rows ``sources``
        (beam search: a candidate continues another one's past). All sources are read first."""
        if not sources:
            return
        if not set(sources) & set(targets):  # (beam search's case) row by row: no row is read after it is written
            for buffer in (self.keys, self.values):
                filled = buffer.narrow(3, 0, self.length)
                for s, t in zip(sources, targets, strict=True):
                    filled.select(1, t).copy_(filled.select(1, s))
            return  # (measured: 16 of 32 rows, 60 positions: 0.24 ms, vs 1.1 ms for one strided index_select)
        source = torch.tensor(sources, dtype=torch.long, device=self.keys.device)
        target = torch.tensor(targets, dtype=torch.long, device=self.keys.device)
        for buffer in (self.keys, self.values):
            filled = buffer.narrow(3, 0, self.length)
            filled.index_copy_(1, target, filled.index_select(1, source))

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only these sequences of the batch, in this order (their filled positions are copied).

        Row by row: one strided ``index_select`` of the filled positions was ~3x slower here."""
        if all(a < b for a, b in itertools.pairwise(rows)):
            # rows leave, the others keep their order (greedy answers that finished): move the kept
            # rows up in place (row i is written only after every row read from it) and drop the tail
            for name in ("keys", "values"):
                buffer = getattr(self, name)
                filled = buffer.narrow(3, 0, self.length)
                for i, row in enumerate(rows):
                    if i != row:
                        filled.select(1, i).copy_(filled.select(1, row))
                setattr(self, name, buffer.narrow(1, 0, len(rows)))
        else:  # reordered or repeated rows (beam search): a new buffer
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = old.new_empty((old.size(0), len(rows), *old.shape[2:]))
                filled, old_filled = new.narrow(3, 0, self.length), old.narrow(3, 0, self.length)
                for i, row in enumerate(rows):
                    filled.select(1, i).copy_(old_filled.select(1, row))
                # the unfilled slots: zeros, not whatever the memory held. The forward pass never reads
                # them, but GPT.decode_step reads every slot (masked), and a NaN there would be NaN
                # after the mask too (0 x NaN)
                new.narrow(3, self.length, new.size(3) - self.length).zero_()
                setattr(self, name, new)
        self.layer_keys = self.keys.unbind(0)
        self.layer_values = self.values.unbind(0)


class _SlotWriter:
    """What :meth:`GPT.decode_step` hands each layer instead of a :class:`KVCache`: writes the
    new keys/values at a positions *tensor* and returns the layer's whole buffer (fixed shapes)."""

    def __init__(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], positions: torch.Tensor) -> None:
        self.keys, self.values, self.positions = keys, values, positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer], self.values[layer]  # (B, H_kv, S, D)
        keys.index_copy_(2, self.positions, k)
        values.index_copy_(2, self.positions, v)
        return keys, values


class SelfAttention(nn.Module):
    """Project to queries, keys and values; position them; attend; project back."""

    def __init__(self, config: GPTConfig, attention: nn.Module) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        kv_dim = config.n_kv_head * config.head_dim
        self.qkv = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)
        self.attention = attention
        self.proj = mark_residual_output(nn.Linear(config.n_embd, config.n_embd, bias=config.bias))
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        B, T, C = x.shape
        kv_dim = self.n_kv_head * self.head_dim
        q, k, v = self.qkv(x).split([C, kv_dim, kv_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = context.positional.rotate(q, k, context.positions)
        if context.cache is not None:  # append this step's keys/values, attend over all so far
            k, v = context.cache.update(context.layer, k, v)
        y = self.attention(q, k, v, context.bias)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.dropout(self.proj(y))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, parts: GPTParts) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positional = parts.positional
        self.dropout = make_dropout(config.dropout)
        # Each layer: the self-attention and the MLP, wired by the recipe's block layout.
        self.blocks = nn.ModuleList(
            parts.make_block(SelfAttention(config, parts.make_attention()), parts.make_mlp())
            for _ in range(config.n_layer)
        )
        # A post-norm block already ends with a norm; a pre-norm stream needs one before the output.
        self.norm = parts.make_norm() if getattr(self.blocks[0], "final_norm", True) else nn.Identity()
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Weight sharing: the output layer scores each token by how well the final
            # hidden state matches that token's embedding. Saves V x C parameters.
            self.head.weight = self.embed.weight
        # Activation checkpointing (the trainer sets it from training.activation_checkpointing):
        # keep only each block's input during the forward pass and recompute the rest of the
        # block in the backward pass: about 1/3 more compute for much less memory.
        self.checkpoint_blocks = False
        self.apply(self._init_weights)
        # Residual output layers start smaller, so the sum of 2·n_layer residual branches stays
        # about unit size. Each layer says so itself (gptf.interfaces.mark_residual_output).
        for block in self.blocks:
            for layer in block.residual_outputs(config.n_embd):
                nn.init.normal_(layer.weight, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        """Small random weights (N(0, 0.02)): with N(0, 1) embeddings, as in the original
        release, the first loss is ~14 instead of ~ln(V) = 6.7."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``ids``: (B, T) token ids -> logits (B, T, V). With a ``cache``, ``ids`` are the
        new tokens only and their positions continue after the cached ones."""
        T = ids.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.config.seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than seq_len={self.config.seq_len}")
        positions = torch.arange(start, start + T, device=ids.device)  # (T,)
        # An additive attention bias (ALiBi) depends only on positions: once for all layers.
        # The keys are every position so far: the cached ones and the T new ones.
        bias = self.positional.score_bias(positions, torch.arange(start + T, device=ids.device))
        x = self.embed(ids)  # (B, T, C)
        x = self.dropout(self.positional.embed(x, positions))
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled() and cache is None
        for layer, block in enumerate(self.blocks):
            context = AttentionContext(self.positional, positions, bias, cache, layer)
            if recompute:  # keep only the block's input; recompute the rest during backward
                x = torch.utils.checkpoint.checkpoint(block, x, context, use_reentrant=False)
            else:
                x = block(x, context)
        if cache is not None:
            cache.advance(T)
        return self.head(self.norm(x))  # (B, T, V)

    def decode_step(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        keys: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """New tokens after a cached past, with shapes that do not grow: for ``torch.compile``
        (:class:`gptf.build.speed.CompiledDecodeStep`).

        ``ids``: (B, T), the newest token of each row, or it and guesses to check (draft and verify);
        ``positions``: (T,) long, where they go; ``keys``/``values``: a :class:`KVCache`'s buffers,
        one (B, H_kv, seq_len, D) per layer (``cache.layer_keys``), written in place at ``positions``.
        Attention runs over *all* seq_len slots with the slots after each token masked out (-inf),
        so the shapes never change with the length and one compiled graph serves every step.
        Returns the logits (B, T, V): those of ``forward(ids, cache)``, up to rounding.
        """
        slots = torch.arange(keys[0].size(-2), device=ids.device)  # (S,)
        hidden = torch.zeros(positions.numel(), slots.numel(), dtype=keys[0].dtype, device=ids.device)
        hidden = hidden.masked_fill(slots > positions[:, None], float("-inf"))  # (T, S): the future
        bias = self.positional.score_bias(positions, slots)  # (H, T, S) or None
        bias = hidden if bias is None else bias.to(keys[0].dtype) + hidden
        x = self.embed(ids)  # (B, T, C)
        x = self.positional.embed(x, positions)
        writer = _SlotWriter(keys, values, positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, AttentionContext(self.positional, positions, bias, writer, layer))  # type: ignore[arg-type]
        return self.head(self.norm(x))  # (B, T, V)

    def new_cache(self, batch: int = 1) -> KVCache:
        """An empty KV cache for ``batch`` sequences, on the model's device."""
        c, weight = self.config, self.embed.weight
        return KVCache(c.n_layer, batch, c.n_kv_head, c.seq_len, c.head_dim, dtype=weight.dtype, device=weight.device)

    def num_parameters(self) -> int:
        """Trainable parameters, each shared tensor counted once."""
        return sum(p.numel() for p in self.parameters())
