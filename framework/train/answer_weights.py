"""How much each answer token counts in the loss: the first few can count more.

The loss is the mean cross-entropy over the answer tokens (the prompt is never scored). But
the answer's tokens are not equally hard. Once its first tokens are right, a small model
recites the rest of a taught answer almost perfectly; the first tokens are where it must
*recognise the concept* the question asks about, in whatever words it was asked
(``benchmarks/first_token_accuracy.py`` on a teacher run with equal weights: val first token
39% right, every later position 87-100%; with the first 3 tokens counting 3x: 45%). With
equal weights that one hard decision is ~1/40 of an answer's loss, and most of each step's
gradient goes to reciting answers it already knows.

``training.answer_start_tokens: N`` and ``training.answer_start_weight: W`` make each
answer's first N tokens count W times. The loss stays a weighted *mean* (divided by the
sum of the weights, not by the token count), so its size is comparable between settings;
the val loss is always the plain mean, so it is comparable with every other run.
"""

from __future__ import annotations

import torch

from gptf.data import IGNORE
from gptf.recipe import TrainingConfig


def answer_token_weights(targets: torch.Tensor, start_tokens: int, start_weight: float) -> torch.Tensor:
    """Per-position loss weights for padded ``targets`` (B, T): 0 where the target is
    ``IGNORE`` (prompt, padding), ``start_weight`` on each row's first ``start_tokens``
    answer tokens, 1 on the rest.

    >>> y = torch.tensor([[IGNORE, IGNORE, 5, 6, 7, IGNORE]])
    >>> answer_token_weights(y, start_tokens=2, start_weight=3.0).tolist()
    [[0.0, 0.0, 3.0, 3.0, 1.0, 0.0]]
    """
    scored = targets != IGNORE
    position = scored.cumsum(dim=1) - 1  # 0 at each row's first answer token, 1 at the next, ...
    weights = torch.where(position < start_tokens, start_weight, 1.0)
    return weights * scored


def loss_weighting(training: TrainingConfig) -> str | None:
    """The training loss's weighting in words (``"first 3 answer tokens x3"``), or None where
    every answer token counts once (no start tokens, or a weight of 1)."""
    if not training.answer_start_tokens or training.answer_start_weight == 1.0:
        return None
    return f"first {training.answer_start_tokens} answer tokens x{training.answer_start_weight:g}"
