"""The plugin author's manual: one hook per component kind.

Every hook takes no arguments and returns ``{name: factory}``. The engine calls each
plugin's implementation separately, so every component remembers which plugin gave it.
A recipe selects a component by name (``model.norm: rmsnorm``) and may pass it
parameters (``model.norm: {name: rmsnorm, eps: 1.0e-5}``); the engine then calls

    factory(**context, **params)

where ``context`` is the fixed set of keyword arguments listed for that kind below and
``params`` are checked against the factory's own signature first (unknown names and
wrong types are reported before any work starts). A factory is usually the component's
class itself. Two plugins registering the same name is an error naming both.

A plugin imports only ``gptf`` (for ``hookimpl``), ``gptf.interfaces``, ``gptf.errors`` and
this module (a layer rule checked in CI); everything else is the engine's business.

Example (a file ``my_norm.py`` listed in a recipe's ``plugins:``)::

    from gptf import hookimpl

    class ScaleNorm(torch.nn.Module): ...

    @hookimpl
    def register_norms():
        return {"scalenorm": ScaleNorm}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("gptf")

Factories = dict[str, Callable[..., Any]]

#: Context keyword arguments the engine passes to each kind's factory.
CONTEXT: dict[str, tuple[str, ...]] = {
    "tokenizer": ("vocab_size",),
    "positional": ("n_embd", "n_head", "head_dim", "seq_len"),
    "norm": ("dim",),
    "attention": ("n_head", "n_kv_head", "head_dim", "seq_len"),
    "mlp": ("dim", "hidden_dim", "bias"),
    "block": ("make_norm", "attention", "mlp", "config"),
    "optimizer": ("params", "lr"),
    "scheduler": ("max_steps",),
    "quantizer": (),
    "decoding_constraint": ("tokenizer",),
    "answer_filter": ("tokenizer",),
    "callback": (),
}


@hookspec
def register_tokenizers() -> Factories:
    """Tokenizers: ``factory(vocab_size) -> gptf.interfaces.Tokenizer``.

    The engine either trains the tokenizer on the recipe's training texts (prompt and
    answer, templated) and saves it to ``tokenizer.path``, or loads that file if it exists.
    After training, ``vocab_size`` must equal the requested size.
    """


@hookspec
def register_positional_encodings() -> Factories:
    """Positional encodings: ``factory(n_embd, n_head, head_dim, seq_len) ->
    gptf.interfaces.PositionalEncoding``.

    One instance is shared by all layers. It must work for any positions below
    ``seq_len`` and for a query block that starts at an offset (KV-cache generation).
    """


@hookspec
def register_norms() -> Factories:
    """Normalisation layers: ``factory(dim) -> nn.Module`` mapping (..., dim) -> (..., dim).

    Built once per place (two per block, one final), so each has its own weights.
    """


@hookspec
def register_attentions() -> Factories:
    """Attention cores: ``factory(n_head, n_kv_head, head_dim, seq_len) ->
    gptf.interfaces.Attention``.

    Must be causal and must accept fewer query than key positions (queries are the last
    ones). ``n_kv_head < n_head`` means grouped-query attention: each key/value head
    serves ``n_head // n_kv_head`` query heads.
    """


@hookspec
def register_mlps() -> Factories:
    """Feed-forward blocks: ``factory(dim, hidden_dim, bias) -> nn.Module``, (B, T, dim) ->
    (B, T, dim). ``hidden_dim`` is ``model.mlp_ratio * dim``; a component may choose its own
    (SwiGLU uses 2/3 of it) as long as it reports its parameters honestly.

    Initialisation: every ``nn.Linear`` starts as N(0, ``model.init_std``) with zero bias; the
    output layer (the one whose result is added to the residual stream) starts smaller, N(0,
    ``init_std / sqrt(2 * n_layer)``). Mark it with ``gptf.interfaces.mark_residual_output``;
    an MLP that marks nothing has every ``nn.Linear`` with ``out_features == dim`` treated as
    its output layer, whatever its name. Other parameters keep their own initialisation.
    """


@hookspec
def register_blocks() -> Factories:
    """Block layouts (``model.block``): ``factory(make_norm, attention, mlp, config) ->
    gptf.interfaces.Block``: how one layer wires its norms, attention and MLP around the
    residual stream (pre-norm, post-norm, parallel...).

    Built once per layer. ``make_norm()`` builds a fresh norm of the recipe's kind each call
    (call it once per norm you use); ``attention`` and ``mlp`` arrive built, and must be kept
    as attributes (their weights belong to the block). ``config`` holds the model's sizes
    (``n_embd``, ``n_layer``, ``dropout``...). ``forward(x, context)`` maps (B, T, C) -> (B, T, C)
    and passes ``context`` to ``attention(x, context)`` unchanged (positions, KV cache, layer).
    The class attribute ``final_norm`` says whether the model adds a norm after the last block.

    Initialisation: as for MLPs; ``Block.residual_outputs(width)`` lists the layers whose
    output is added to the residual stream (by default the attention's and the MLP's).
    """


@hookspec
def register_optimizers() -> Factories:
    """Optimizers: ``factory(params, lr) -> torch.optim.Optimizer``.

    ``params`` are parameter groups: the first with ``weight_decay`` applied (matrices),
    the second with ``weight_decay: 0.0`` (biases, norms). The engine sets the group
    ``lr`` every step from the scheduler, so the optimizer must honour group ``lr``.
    """


@hookspec
def register_schedulers() -> Factories:
    """Learning-rate schedules: ``factory(max_steps) -> Callable[[int], float]``.

    The callable maps an optimizer step to a multiplier of ``training.lr``. Steps count from 0:
    the first update uses ``schedule(0)``, the last ``schedule(max_steps - 1)`` (so a warm-up
    of ``w`` steps that returns ``(step + 1) / w`` reaches the peak at step ``w - 1``).
    """


@hookspec
def register_quantizers() -> Factories:
    """Post-training quantizers: ``factory() -> gptf.interfaces.Quantizer``, or ``None``
    for "no quantization". Applied after training; its tensors are saved beside the model.
    """


@hookspec
def register_decoding_constraints() -> Factories:
    """Decoding constraints: ``factory(tokenizer) -> gptf.interfaces.DecodingConstraint``.

    Applied in recipe order at every generation step; they may change the next-token
    logits (ban tokens, penalise repeats) and/or stop generation (stop strings).
    """


@hookspec
def register_answer_filters() -> Factories:
    """Answer filters: ``factory(tokenizer) -> gptf.interfaces.AnswerFilter``, or ``None`` for
    "show every answer".

    One filter per recipe (``generation.answer_filter``). After an answer is generated (in
    ``gptf generate``, ``chat``, ``serve`` and the greedy evaluation alike) the engine calls
    ``confidence(answer)`` with a ``gptf.interfaces.FinishedAnswer`` and shows ``reply`` instead
    of the answer when ``keep(confidence)`` is False. ``confidence`` must be deterministic and
    higher for surer answers; the factory must accept a ``threshold: float`` parameter, which
    ``gptf eval --calibrate`` chooses on the val questions and can write into the run's recipe.
    """


@hookspec
def register_callbacks() -> Factories:
    """Training callbacks: ``factory() -> gptf.interfaces.Callback``.

    Listed in ``training.callbacks``; called at train start, after each step, after each
    evaluation and at the end. They may read the trainer but must not change the update.
    """


#: Component kind -> the hook that registers it.
HOOK_FOR_KIND: dict[str, str] = {
    "tokenizer": "register_tokenizers",
    "positional": "register_positional_encodings",
    "norm": "register_norms",
    "attention": "register_attentions",
    "mlp": "register_mlps",
    "block": "register_blocks",
    "optimizer": "register_optimizers",
    "scheduler": "register_schedulers",
    "quantizer": "register_quantizers",
    "decoding_constraint": "register_decoding_constraints",
    "answer_filter": "register_answer_filters",
    "callback": "register_callbacks",
}
