"""The contracts a component must meet, one small class per kind, and the few helpers a
plugin may use.

Plugins subclass (or duck-type) these. The engine only ever talks to components through
these methods, which is what makes every component swappable by name. A plugin imports
only ``gptf`` (for ``hookimpl``), this module, :mod:`gptf.errors` and :mod:`gptf.hookspecs`
(a layer rule checked in CI), so everything a plugin may need lives here:
:func:`causal_mask`, :class:`DecodingState`, :class:`FinishedAnswer`, :func:`mark_residual_output` and
:func:`make_dropout`.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import torch
from torch import nn

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>", "<unk>")

#: What the model says instead of an answer it is not sure of (the data teaches the same text
#: for questions it does not cover).
DECLINE_TEXT = "这个问题我还没有学过。"

#: Attribute a layer carries when its output is added to the residual stream (see below).
RESIDUAL_OUTPUT = "gptf_residual_output"


def causal_mask(n_queries: int, n_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (n_queries, n_keys) mask, True where attention is allowed: a token may look
    at itself and the past, never the future.

    The queries are the *last* ``n_queries`` of the ``n_keys`` positions (during KV-cache
    generation the keys include the cached past). With ``n_queries == n_keys`` this is the
    familiar lower-triangular matrix.
    """
    offset = n_keys - n_queries
    q_pos = torch.arange(n_queries, device=device).unsqueeze(1) + offset
    k_pos = torch.arange(n_keys, device=device).unsqueeze(0)
    return k_pos <= q_pos


def mark_residual_output(layer: nn.Linear) -> nn.Linear:
    """Mark ``layer`` as one whose output is added to the residual stream; return it.

    The model starts such layers smaller (std ``init_std / sqrt(2 * n_layer)``, as GPT-2 does),
    so the sum of 2·n_layer residual branches stays about unit size. An MLP marks its output
    layer (``self.down = mark_residual_output(nn.Linear(hidden, dim))``). An MLP that marks
    nothing gets the same treatment for every ``nn.Linear`` inside it that maps to the model
    width (``out_features == dim``), which is its output layer whatever its name.
    """
    setattr(layer, RESIDUAL_OUTPUT, True)
    return layer


def make_dropout(p: float) -> nn.Module:
    """Dropout, or nothing at all when ``p`` is 0 (saves a call per layer per token)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def residual_outputs(module: nn.Module, width: int) -> list[nn.Linear]:
    """The layers of ``module`` that write into the residual stream of width ``width``:
    the marked ones, or if none is marked, every ``nn.Linear`` with ``out_features == width``."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    marked = [m for m in linears if getattr(m, RESIDUAL_OUTPUT, False)]
    return marked or [m for m in linears if m.out_features == width]


@runtime_checkable
class Tokenizer(Protocol):
    """Turns text into token ids and back.

    A tokenizer is built empty by its factory, then either ``train``-ed on the recipe's
    training texts or ``load``-ed from a file. It must know the four special tokens
    ``<bos> <eos> <pad> <unk>``.
    """

    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int

    @property
    def vocab_size(self) -> int: ...

    def train(self, texts: Iterable[str]) -> None: ...

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> None: ...

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with no special tokens added."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are skipped."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (``b""`` for special tokens)."""
        ...


class PositionalEncoding(nn.Module):
    """How the model learns where each token is.

    The model calls all three stages; a component overrides only the ones it needs:
    learned/sinusoidal positions add to the embeddings (:meth:`embed`), RoPE rotates
    queries and keys (:meth:`rotate`), ALiBi adds a bias to attention scores
    (:meth:`score_bias`). ``positions`` are absolute token positions, shape ``(T,)``.
    """

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x``: token embeddings (B, T, C). Return (B, T, C)."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q``: (B, H, T, D), ``k``: (B, H_kv, T, D). Return them, possibly rotated."""
        return q, k

    def score_bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor | None:
        """Additive bias for attention scores, (H, Tq, Tk), or None."""
        return None


class Attention(nn.Module):
    """The score -> causal mask -> softmax -> weighted sum step of self-attention.

    ``forward(q, k, v, bias)`` takes q (B, H, Tq, D) and k, v (B, H_kv, Tk, D) where the
    queries are the *last* Tq of the Tk positions (so a KV cache works), and returns
    (B, H, Tq, D). It must be causal: query i never sees a key after it. The projections
    live in the model, so swapping attention never changes the parameter count.
    """

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


class AttentionContext:
    """Where the tokens of one forward pass are, for the attention of one layer: their
    positional encoding and absolute ``positions`` (T,), the attention score ``bias`` (ALiBi) or
    None, the KV ``cache`` or None, and the ``layer`` index (which part of the cache is its own).

    A :class:`Block` does not look inside: it hands the context to its attention unchanged.
    """

    __slots__ = ("bias", "cache", "layer", "positional", "positions")

    def __init__(
        self,
        positional: PositionalEncoding,
        positions: torch.Tensor,
        bias: torch.Tensor | None = None,
        cache: Any = None,
        layer: int = 0,
    ) -> None:
        self.positional, self.positions, self.bias, self.cache, self.layer = positional, positions, bias, cache, layer


class Block(nn.Module):
    """One Transformer layer: how the norms, the attention and the MLP are wired around the
    residual stream (``model.block``: prenorm, postnorm, parallel, ...).

    The factory receives, besides its own recipe parameters (see ``register_blocks``):

    * ``make_norm``: call it once per norm the block wants; each call builds a fresh norm of
      the recipe's kind (``model.norm``) and width ``n_embd``;
    * ``attention``: the self-attention layer, already built: ``attention(x, context)``,
      (B, T, C) -> (B, T, C). Its output projection is already marked as a residual output;
    * ``mlp``: the feed-forward layer, already built: ``mlp(x)``, (B, T, C) -> (B, T, C);
    * ``config``: the model's sizes, read-only: ``n_embd``, ``n_layer``, ``n_head``,
      ``dropout``, ``init_std``, ...

    :meth:`forward` maps (B, T, C) -> (B, T, C) and must pass ``context`` (an
    :class:`AttentionContext`) to the attention unchanged. Keep each token on its own except
    through the attention (causality), and register the attention and the MLP as attributes so
    their weights are saved and trained.

    :attr:`final_norm`: whether the model applies one more norm after the last block. A pre-norm
    stream is never normalised inside the blocks, so it needs one; a post-norm block already
    ends with a norm.
    """

    final_norm: bool = True

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        raise NotImplementedError

    def residual_outputs(self, width: int) -> list[nn.Linear]:
        """The layers whose outputs are added to the residual stream; the model starts them
        smaller (see :func:`mark_residual_output`). By default: those of each direct
        submodule (the attention's marked projection, then the MLP's), in registration order."""
        return [layer for child in self.children() for layer in residual_outputs(child, width)]


class Quantizer(Protocol):
    """Turns a trained fp32 model into a smaller/faster one for inference."""

    def quantize(self, model: nn.Module) -> nn.Module:
        """Return a quantized copy of ``model`` (``model`` itself is left untouched)."""
        ...

    def state_tensors(self, quantized: nn.Module) -> dict[str, torch.Tensor]:
        """Plain tensors that describe the quantized model, for a safetensors file."""
        ...

    def load(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
        """Rebuild the quantized model from an fp32 skeleton and :meth:`state_tensors`."""
        ...


@attrs.define
class DecodingState:
    """What a decoding constraint may look at while an answer is generated."""

    tokenizer: Tokenizer
    prompt_ids: list[int]
    new_ids: list[int] = attrs.field(factory=list)
    budget: int | None = None  # the most new tokens this answer may have (None: unknown)

    @property
    def text(self) -> str:
        """The answer so far, decoded."""
        return self.tokenizer.decode(self.new_ids)


class DecodingConstraint:
    """A rule applied at every generation step.

    :meth:`adjust_logits` may change the next-token scores (ban or favour tokens);
    :meth:`should_stop` may end generation. Both see the :class:`DecodingState`.
    """

    #: True if :meth:`adjust_logits` and :meth:`should_stop` may run in several workers at once:
    #: ``gptf eval`` and the end of ``gptf run`` answer groups of questions side by side
    #: (:func:`gptf.generate.greedy_answers`), in worker processes (each with its own copy of the
    #: constraint) or threads (sharing it). Safe: nothing shared is changed in place, nothing learnt
    #: from one answer is needed in another, and a cache filled on first use stores each entry in one
    #: assignment. With a constraint that leaves it False, the groups are answered one after the other.
    thread_safe: ClassVar[bool] = False

    def adjust_logits(self, logits: torch.Tensor, state: DecodingState) -> torch.Tensor:
        """``logits``: (V,) scores for the next token. Return adjusted scores."""
        return logits

    def should_stop(self, state: DecodingState) -> bool:
        """Return True to end generation after the token just added."""
        return False


#: Built-in ways to measure how far to trust a finished answer (higher = more trustworthy):
#: ``mean_logprob``: mean log-probability of the chosen tokens (the log of their geometric mean
#: probability); ``min_logprob``: the log-probability of the least likely chosen token;
#: ``entropy``: minus the mean entropy (nats) of the next-token distributions along the answer;
#: ``question_overlap``: the share of the question's characters (punctuation and spaces aside) that
#: the answer uses too: does it talk about what was asked?; ``min_logprob_overlap``: ``min_logprob``
#: plus :data:`OVERLAP_WEIGHT` times ``question_overlap``: sure of every token *and* on the question.
#: ``taught_question``: how much the question looks like the questions the answer was taught for (the
#: char F1 of the question and the closest of them, 0 for a taught answer whose numbers came out different;
#: see :class:`gptf.decoding.taught_questions.TaughtQuestions`):
#: was the model taught to give this answer to a question like this one?; ``min_logprob_taught``:
#: ``min_logprob`` plus :data:`TAUGHT_WEIGHT` times ``taught_question``. Both need the run's training
#: questions (-inf where the generator has none).
CONFIDENCE_MEASURES = (
    "mean_logprob",
    "min_logprob",
    "entropy",
    "question_overlap",
    "min_logprob_overlap",
    "taught_question",
    "min_logprob_taught",
)
TAUGHT_MEASURES = ("taught_question", "min_logprob_taught")
#: In ``min_logprob_overlap``, all of the question's characters found in the answer count like 4 nats
#: of log-probability. Chosen on the teacher run's answers by beam search among 1, 2, 4, 8, 16: 4 made
#: the most val answers right or honestly declined and separated right from wrong best on 200 training
#: questions (AUROC 0.874; 8 did slightly better on val alone, 0.813 vs 0.806).
OVERLAP_WEIGHT = 4.0
#: In ``min_logprob_taught``, a question exactly like a taught one counts like 2 nats of log-probability.
#: First chosen (8) on the teacher run's val answers by beam search alone, among 2, 4 and 8 (AUROC 0.811 /
#: 0.867 / 0.890). With the memory of the taught answers (``generation.memory``) the log-probabilities are
#: the mixed ones, and 2 separates best again: mean val AUROC over three teacher runs (600, 700, 800 steps)
#: 0 -> 0.826, 1 -> 0.854, **2 -> 0.862**, 3 -> 0.862, 4 -> 0.860, 8 -> 0.849, 12 -> 0.839; val right or
#: honestly declined at the calibrated threshold 0.894 (2) vs 0.891 (8). The training questions cannot
#: choose it, since each of them is its own closest taught question. Every calibration records it
#: (``calibration.json``: ``taught_weight``).
TAUGHT_WEIGHT = 2.0


def content_chars(text: str) -> str:
    """The characters that carry meaning: no punctuation (P*), spaces (Z*) or control (C*)."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZC")


def question_overlap(question: str, answer: str) -> float:
    """The share of the question's content characters that the answer has too (0 to 1; each
    character counted as often as it occurs). A right answer usually names what was asked
    (高压锅为什么煮得快 -> 高压锅密封后…); an answer about another concept usually does not.

    >>> question_overlap("高压锅怎么用？", "高压锅密封后锅内气压升高")
    0.5
    """
    asked, said = Counter(content_chars(question)), Counter(content_chars(answer))
    total = sum(asked.values())
    return sum((asked & said).values()) / total if total else 0.0


@attrs.frozen
class FinishedAnswer:
    """A generated answer as an answer filter sees it.

    ``logprobs[i]`` is the log-probability of the i-th chosen token and ``entropies[i]`` the
    entropy (nats) of the distribution it was chosen from; both are measured on the model's scores
    after the decoding constraints and *before* temperature, top-k and top-p, so the same answer
    has the same confidence however it was sampled.
    """

    prompt: str
    text: str  # the cleaned answer
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    entropies: tuple[float, ...]
    stop_reason: str = "eos"
    # how much the question looks like the questions this answer was taught for (0 to 1); None where
    # the generator has no training questions (gptf.decoding.taught_questions)
    taught_similarity: float | None = None

    def measure(self, name: str) -> float:
        """One of :data:`CONFIDENCE_MEASURES`; an answer with no tokens is infinitely unsure."""
        if name not in CONFIDENCE_MEASURES:
            raise ValueError(f"unknown confidence measure {name!r}; choose from {', '.join(CONFIDENCE_MEASURES)}")
        if not self.logprobs or (name in TAUGHT_MEASURES and self.taught_similarity is None):
            return -math.inf
        if name == "taught_question":
            return self.taught_similarity  # type: ignore[return-value]
        if name == "min_logprob_taught":
            return min(self.logprobs) + TAUGHT_WEIGHT * self.taught_similarity  # type: ignore[operator]
        if name == "mean_logprob":
            return sum(self.logprobs) / len(self.logprobs)
        if name == "min_logprob":
            return min(self.logprobs)
        if name == "entropy":
            return -sum(self.entropies) / len(self.entropies)
        overlap = question_overlap(self.prompt, self.text)
        return overlap if name == "question_overlap" else min(self.logprobs) + OVERLAP_WEIGHT * overlap


class AnswerFilter:
    """Looks at a finished answer and decides whether to show it.

    :meth:`confidence` says how sure the model was (higher = surer); an answer whose confidence is
    below ``threshold`` is replaced by ``reply``. ``gptf eval --calibrate`` picks ``threshold`` on
    the val questions, so a filter's confidence only has to *rank* answers well (right ones above
    wrong ones); its scale is free.
    """

    threshold: float = -math.inf
    reply: str = DECLINE_TEXT

    def confidence(self, answer: FinishedAnswer) -> float:
        raise NotImplementedError

    def keep(self, confidence: float) -> bool:
        """True to show the answer, False to reply with :attr:`reply` instead."""
        return confidence >= self.threshold


class Callback:
    """Hooks into the training loop. Override only what you need.

    ``trainer`` is the running :class:`gptf.train.trainer.Trainer`; ``metrics`` is the dict
    that is also written to ``metrics.jsonl``. Under torchrun every process calls the step
    hooks (``trainer.world.is_main`` is true in rank 0 only); ``on_eval`` runs in rank 0 alone,
    which is the process that evaluates.
    """

    def on_train_start(self, trainer: Any) -> None:
        """Called once, after the model is built and before the first step."""

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """Called after every optimizer step."""

    def on_eval(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """Called after every evaluation."""

    def on_train_end(self, trainer: Any) -> None:
        """Called once, after the last step (also after an interrupt)."""
