"""From a recipe to objects: every component is looked up by name in the registry."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from gptf.build.plugins import load_plugins
from gptf.build.registry import Registry
from gptf.errors import RecipeError
from gptf.interfaces import DecodingConstraint, Tokenizer
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
    """The GPT with the recipe's parts: one positional encoding, and factories for the rest."""
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
