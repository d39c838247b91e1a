"""The KV cache: generation without recomputing the past.

Without it, producing token n means running the model over all n tokens again. But the
keys and values of earlier tokens never change (causal mask!), so we keep them in a
preallocated buffer and feed the model only the newest token: each step then costs
O(n) instead of O(n^2).
"""

from __future__ import annotations

import torch


class KVCache:
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
