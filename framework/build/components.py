"""From a recipe to objects: every component is looked up by name in the registry."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from gptf.build.devices import total_memory
from gptf.build.plugins import load_plugins
from gptf.build.registry import Registry
from gptf.errors import GptfError, RecipeError
from gptf.interfaces import AnswerFilter, DecodingConstraint, Tokenizer
from gptf.model import GPT, GPTConfig, GPTParts
from gptf.recipe import ComponentSpec, LoadedRecipe, Recipe


@attrs.frozen
class Slot:
    """One place in a recipe where a component is chosen."""

    kind: str
    key: str  # recipe key path, e.g. model.norm
    spec: ComponentSpec


def component_slots(recipe: Recipe) -> list[Slot]:
    m, t = recipe.model, recipe.training
    slots = [
        Slot("tokenizer", "tokenizer.type", recipe.tokenizer.type),
        Slot("positional", "model.positional", m.positional),
        Slot("norm", "model.norm", m.norm),
        Slot("attention", "model.attention", m.attention),
        Slot("mlp", "model.mlp", m.mlp),
        Slot("block", "model.block", m.block),
        Slot("optimizer", "training.optimizer", t.optimizer),
        Slot("scheduler", "training.scheduler", t.scheduler),
        Slot("quantizer", "quantizer", recipe.quantizer),
    ]
    slots += [Slot("callback", f"training.callbacks[{i}]", s) for i, s in enumerate(t.callbacks)]
    slots += [
        Slot("decoding_constraint", f"generation.constraints[{i}]", s)
        for i, s in enumerate(recipe.generation.constraints)
    ]
    slots.append(Slot("answer_filter", "generation.answer_filter", recipe.generation.answer_filter))
    return slots


def open_registry(recipe_plugins: Iterable[str] = (), base_dir: Path | None = None) -> Registry:
    return Registry(load_plugins(list(recipe_plugins), base_dir))


def registry_for(loaded: LoadedRecipe) -> Registry:
    """Load the plugins a recipe needs and check every component it names."""
    registry = open_registry(loaded.recipe.plugins, loaded.base_dir)
    problems = component_problems(loaded.recipe, registry)
    if problems:
        raise RecipeError(str(loaded.chain[0]), problems)
    return registry


def component_problems(recipe: Recipe, registry: Registry) -> list[str]:
    """Every component the recipe names exists and accepts the parameters it is given."""
    problems: list[str] = []
    for slot in component_slots(recipe):
        problems += registry.check(slot.kind, slot.spec.name, slot.spec.params, slot.key)
    return problems


def _make(registry: Registry, slot: Slot, **context: Any) -> Any:
    return registry.build(slot.kind, slot.spec.name, slot.spec.params, slot.key, **context)


def new_tokenizer(recipe: Recipe, registry: Registry) -> Tokenizer:
    slot = Slot("tokenizer", "tokenizer.type", recipe.tokenizer.type)
    return _make(registry, slot, vocab_size=recipe.tokenizer.vocab_size)


#: Memory each layer takes besides its weights: the Python objects of a block and its parts
#: (about 60 KiB measured; this is a floor).
LAYER_OVERHEAD_BYTES = 16 * 1024


def minimum_parameters(recipe: Recipe, vocab_size: int) -> int:
    """A floor on the parameter count by arithmetic alone, before anything is built: the parts
    the model itself owns (token embedding, output layer if untied, each block's attention
    projections), whatever the plugins add to them."""
    m = recipe.model
    d, heads = m.n_embd, m.n_head
    kv_dim = (d // heads) * (m.n_kv_head or heads) if heads > 0 else d
    embed = vocab_size * d * (1 if m.tie_embeddings else 2)
    return embed + m.n_layer * (d * (d + 2 * kv_dim) + d * d)


def minimum_model_bytes(recipe: Recipe, vocab_size: int, bytes_per_parameter: int = 4) -> int:
    """A floor on the memory the built model takes (fp32 weights and the layers' objects)."""
    return bytes_per_parameter * minimum_parameters(recipe, vocab_size) + recipe.model.n_layer * LAYER_OVERHEAD_BYTES


def model_size_problem(recipe: Recipe, vocab_size: int, needed: int, what: str) -> str | None:
    """``model: ... need at least X GiB ..., this machine has Y GiB`` if ``needed`` bytes cannot fit."""
    memory = total_memory()
    if memory is None or needed <= memory:
        return None
    m = recipe.model
    return (
        f"model: at least {minimum_parameters(recipe, vocab_size):,} parameters (n_layer={m.n_layer}, "
        f"n_embd={m.n_embd}, vocab {vocab_size}) need at least {needed / 2**30:,.1f} GiB {what}, "
        f"but this machine has {memory / 2**30:.0f} GiB; make the model smaller"
    )


def model_config(recipe: Recipe, vocab_size: int) -> GPTConfig:
    m = recipe.model
    return GPTConfig(
        vocab_size=vocab_size,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        seq_len=m.seq_len,
        n_kv_head=m.n_kv_head or m.n_head,
        mlp_ratio=m.mlp_ratio,
        bias=m.bias,
        tie_embeddings=m.tie_embeddings,
        dropout=m.dropout,
        init_std=m.init_std,
    )


def build_model(recipe: Recipe, registry: Registry, vocab_size: int) -> GPT:
    """The GPT with the recipe's parts: one positional encoding, and factories for the rest.
    Refused before any allocation if it cannot fit in this machine's memory."""
    problem = model_size_problem(recipe, vocab_size, minimum_model_bytes(recipe, vocab_size), "to hold the weights")
    if problem:
        raise GptfError(problem)
    m, config = recipe.model, model_config(recipe, vocab_size)
    sizes = {"n_head": m.n_head, "head_dim": config.head_dim, "seq_len": m.seq_len}
    positional = _make(registry, Slot("positional", "model.positional", m.positional), n_embd=m.n_embd, **sizes)

    def make_norm() -> nn.Module:
        return _make(registry, Slot("norm", "model.norm", m.norm), dim=m.n_embd)

    def make_attention() -> nn.Module:
        return _make(registry, Slot("attention", "model.attention", m.attention), n_kv_head=config.n_kv_head, **sizes)

    def make_mlp() -> nn.Module:
        slot = Slot("mlp", "model.mlp", m.mlp)
        return _make(registry, slot, dim=m.n_embd, hidden_dim=m.mlp_ratio * m.n_embd, bias=m.bias)

    def make_block(attention: nn.Module, mlp: nn.Module) -> nn.Module:
        slot = Slot("block", "model.block", m.block)
        return _make(registry, slot, make_norm=make_norm, attention=attention, mlp=mlp, config=config)

    return GPT(config, GPTParts(positional, make_norm, make_attention, make_mlp, make_block))


def build_optimizer(recipe: Recipe, registry: Registry, model: nn.Module) -> torch.optim.Optimizer:
    """Matrices get weight decay; biases and norm gains (1-D tensors) do not."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": recipe.training.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    slot = Slot("optimizer", "training.optimizer", recipe.training.optimizer)
    return _make(registry, slot, params=groups, lr=recipe.training.lr)


def build_scheduler(recipe: Recipe, registry: Registry) -> Any:
    slot = Slot("scheduler", "training.scheduler", recipe.training.scheduler)
    return _make(registry, slot, max_steps=recipe.training.max_steps)


def build_quantizer(recipe: Recipe, registry: Registry) -> Any:
    return _make(registry, Slot("quantizer", "quantizer", recipe.quantizer))


def build_callbacks(recipe: Recipe, registry: Registry) -> list[Any]:
    return [_make(registry, s) for s in component_slots(recipe) if s.kind == "callback"]


def build_constraints(specs: list[ComponentSpec], registry: Registry, tokenizer: Tokenizer) -> list[DecodingConstraint]:
    return [
        _make(registry, Slot("decoding_constraint", f"generation.constraints[{i}]", s), tokenizer=tokenizer)
        for i, s in enumerate(specs)
    ]


def build_answer_filter(spec: ComponentSpec, registry: Registry, tokenizer: Tokenizer) -> AnswerFilter | None:
    return _make(registry, Slot("answer_filter", "generation.answer_filter", spec), tokenizer=tokenizer)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference_parameter_count(vocab: int, n_embd: int, n_layer: int) -> int:
    """V·d + L·(12d² + 11d) + d: tied embedding, per-layer qkv+proj (4d²+4d), MLP
    (8d²+5d) and two norms (2d), plus the final norm."""
    d = n_embd
    return vocab * d + n_layer * (12 * d * d + 11 * d) + d


def is_reference_architecture(recipe: Recipe) -> bool:
    m = recipe.model
    return (
        m.positional.name in ("rope", "none")
        and m.norm.name == "rmsnorm"
        and m.mlp.name == "silu"
        and m.block.name == "prenorm"
        and m.mlp_ratio == 4
        and m.bias
        and m.tie_embeddings
        and (m.n_kv_head or m.n_head) == m.n_head
    )
