"""What was built, in words: the components table, the parameter count, the run's banner.

Shown by ``gptf run`` before training and by ``gptf inspect`` (which also shows the costs:
FLOPs per token and training memory, :mod:`gptf.build.costs`).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gptf import __version__
from gptf.build.components import (
    component_slots,
    count_parameters,
    is_reference_architecture,
    reference_parameter_count,
)
from gptf.build.costs import flops_per_token, human, training_memory
from gptf.build.registry import Registry
from gptf.model import GPT
from gptf.recipe import LoadedRecipe, Recipe


def components_table(recipe: Recipe, registry: Registry, title: str = "components") -> Table:
    """Each recipe slot, the component chosen for it, the plugin that gave it, its parameters."""
    table = Table(title=title, title_justify="left")
    for column in ("slot", "component", "plugin", "parameters"):
        table.add_column(column)
    for slot in component_slots(recipe):
        info = registry.components[slot.kind][slot.spec.name]
        params = ", ".join(f"{k}={v}" for k, v in slot.spec.params.items()) or "-"
        table.add_row(slot.key, slot.spec.name, info.plugin, params)
    memory = recipe.generation.memory
    if memory is not None:  # a setting of the decoding, not a plugin (gptf.decoding.taught_memory)
        params = f"weight={memory.weight}, neighbours={memory.neighbours}, temperature={memory.temperature}"
        table.add_row("generation.memory", "taught_memory", "gptf.decoding", params)
    return table


def parameter_lines(recipe: Recipe, model: GPT) -> list[str]:
    """The parameter count, and for the reference architecture the formula that gives it."""
    total = count_parameters(model)
    lines = [f"parameters: {total:,}"]
    if is_reference_architecture(recipe):
        m, v = recipe.model, model.config.vocab_size
        expected = reference_parameter_count(v, m.n_embd, m.n_layer)
        lines.append(
            f"  = V·d + L·(12d² + 11d) + d with V={v}, d={m.n_embd}, L={m.n_layer}: "
            f"{v}·{m.n_embd} + {m.n_layer}·(12·{m.n_embd}² + 11·{m.n_embd}) + {m.n_embd} = {expected:,}"
        )
    return lines


def banner(loaded: LoadedRecipe, registry: Registry, model: GPT, console: Console) -> None:
    """What ``gptf run`` prints before training: the recipe chain, components, shapes, size."""
    chain = " -> ".join(str(p.name) for p in loaded.chain)
    console.rule(f"[bold]gptf {__version__}[/]  recipe {loaded.recipe.name}")
    console.print(f"recipe chain: {chain}", highlight=False)
    console.print(components_table(loaded.recipe, registry))
    m = loaded.recipe.model
    console.print(
        f"model: {m.n_layer} layers, {m.n_head} heads, d={m.n_embd}, seq_len={m.seq_len}, "
        f"vocab={model.config.vocab_size}",
        highlight=False,
    )
    for line in parameter_lines(loaded.recipe, model):
        console.print(line, highlight=False)


def cost_lines(recipe: Recipe, model: GPT) -> list[str]:
    """FLOPs per token and training memory per micro-batch (see :mod:`gptf.build.costs`)."""
    m, t = recipe.model, recipe.training
    flops = flops_per_token(model)
    n = flops.matmul_parameters
    lines = [
        f"FLOPs per token (N = {n:,} parameters a token is multiplied by, T = seq_len {m.seq_len}):",
        f"  training  ≈ 6N + 12·L·T·d = 6·{human(n)} + 12·{m.n_layer}·{m.seq_len}·{m.n_embd} = "
        f"{human(flops.training)}FLOPs",
        f"  inference ≈ 2N + 4·L·T·d = {human(flops.forward)}FLOPs (2N alone: {human(2 * n)}FLOPs)",
    ]
    for bf16 in {"fp32": [False], "bf16": [True], "auto": [False, True]}[t.precision]:
        mem = training_memory(model, t.micro_batch, m.seq_len, bf16=bf16, checkpointing=t.activation_checkpointing)
        how = "bf16 autocast" if bf16 else "fp32"
        how += ", activation checkpointing" if t.activation_checkpointing else ""
        lines.append(
            f"training memory per micro-batch ({t.micro_batch} x {m.seq_len} tokens, {how}): "
            f"≈ {human(mem.total, 'B')} = weights {human(mem.weights, 'B')} + gradients {human(mem.gradients, 'B')} "
            f"+ AdamW {human(mem.optimizer, 'B')} + activations {human(mem.activations, 'B')}"
        )
    return lines
