"""What was built, in words: the components table, the parameter count, the run's banner.

Shown by ``gptf run`` before training and by ``gptf inspect``.
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
