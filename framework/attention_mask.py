"""The causal mask: a token may look at itself and the past, never the future."""

from __future__ import annotations

import torch


def causal_mask(n_queries: int, n_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (n_queries, n_keys) mask, True where attention is allowed.

    The queries are the *last* ``n_queries`` of the ``n_keys`` positions (during KV-cache
    generation the keys include the cached past). With ``n_queries == n_keys`` this is the
    familiar lower-triangular matrix.
    """
    offset = n_keys - n_queries
    q_pos = torch.arange(n_queries, device=device).unsqueeze(1) + offset
    k_pos = torch.arange(n_keys, device=device).unsqueeze(0)
    return k_pos <= q_pos
