"""Building and training: ``gptf run``, ``gptf inspect``, ``gptf plugins`` and ``gptf data check``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gptf.cli.app import DeviceOption, OverridesArg, RecipeArg, app, console, data_app, err_console, friendly_errors
from gptf.errors import GptfError


@app.command()
@friendly_errors
def run(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from this run's weights (fresh optimizer), e.g. checkpoints/teacher_3m")
    ] = None,
    promote_if_better: Annotated[
        bool, typer.Option(help="Copy the new run to <run>/best only if it answers val better than the current best")
    ] = False,
    device: DeviceOption = "auto",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from the last checkpoint of the recipe's run (or of the run directory given "
            "after it: --resume checkpoints/<name>)",
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="With --resume: continue even if the recipe or data changed")] = False,
) -> None:
    """Train a recipe end to end: tokenizer, training, saving, quantization, demo answers, val scores.

    Ctrl+C stops after the current step and saves a checkpoint; --resume continues it.
    Under torchrun (torchrun --nproc_per_node=N -m gptf run ...) N processes train together."""
    from gptf.recipe import load_recipe
    from gptf.run import run_recipe
    from gptf.train.distributed import launched_world
    from gptf.train.session import split_resume_argument

    overrides, resume_dir = split_resume_argument(overrides or [], resume=resume, force=force)
    loaded = load_recipe(recipe, overrides)
    if resume and (init_from is not None or promote_if_better):
        raise GptfError(
            "--resume continues a run as it was started; it cannot be combined with --init-from or --promote-if-better"
        )
    with launched_world(device) as world:
        if promote_if_better and world.distributed:
            raise GptfError(
                "--promote-if-better runs in one process, not under torchrun",
                hint="train under torchrun, then compare the runs with gptf eval; or drop torchrun",
            )
        shown = console if world.is_main else Console(quiet=True)  # rank 0 alone prints
        if resume:
            run_recipe(
                loaded, shown, device=device, resume=resume_dir or loaded.recipe.run_dir, force=force, world=world
            )
        elif promote_if_better:
            from gptf.tools.promotion import run_with_promotion

            run_with_promotion(loaded, console, init_from=init_from, device=device)
        else:
            run_recipe(loaded, shown, init_from=init_from, device=device, world=world)


@app.command()
@friendly_errors
def inspect(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Build the model without training; show each component, its plugin and parameters, the
    FLOPs per token and an estimate of the training memory."""
    from gptf.build.components import build_model, count_parameters, registry_for
    from gptf.build.describe import components_table, cost_lines, parameter_lines
    from gptf.recipe import load_recipe

    loaded = load_recipe(recipe, overrides or [])
    registry = registry_for(loaded)
    vocab = _known_vocab_size(loaded.recipe, registry)
    model = build_model(loaded.recipe, registry, vocab)
    console.print(f"recipe chain: {' -> '.join(str(p) for p in loaded.chain)}")
    console.print(components_table(loaded.recipe, registry))
    table = Table(title="parameters by module", title_justify="left")
    table.add_column("module")
    table.add_column("parameters", justify="right")
    table.add_row(
        "embed (tied with head)" if loaded.recipe.model.tie_embeddings else "embed",
        f"{count_parameters(model.embed):,}",
    )
    table.add_row("positional", f"{count_parameters(model.positional):,}")
    for i, block in enumerate(model.blocks):
        table.add_row(f"blocks.{i}", f"{count_parameters(block):,}")
    table.add_row("norm (final)", f"{count_parameters(model.norm):,}")
    if not loaded.recipe.model.tie_embeddings:
        table.add_row("head", f"{count_parameters(model.head):,}")
    console.print(table)
    for line in parameter_lines(loaded.recipe, model) + cost_lines(loaded.recipe, model):
        console.print(line)


def _known_vocab_size(recipe: Any, registry: Any) -> int:
    """The vocabulary of an existing tokenizer file, else the recipe's requested size."""
    from gptf.build.components import new_tokenizer

    path = Path(recipe.tokenizer.path)
    if path.is_file() and not recipe.tokenizer.rebuild:
        tokenizer = new_tokenizer(recipe, registry)
        try:
            tokenizer.load(path)
            return tokenizer.vocab_size
        except Exception:
            pass
    return recipe.tokenizer.vocab_size


@app.command()
@friendly_errors
def plugins(
    recipe: Annotated[Path | None, typer.Option(help="Also load the plugins this recipe names")] = None,
) -> None:
    """List every loaded plugin, where it came from, and what it registered."""
    from gptf.build.components import open_registry
    from gptf.recipe import load_recipe

    if recipe is not None:
        loaded = load_recipe(recipe)
        registry = open_registry(loaded.recipe.plugins, loaded.base_dir)
    else:
        registry = open_registry()
    by_plugin: dict[str, list[str]] = {}
    for kind, components in registry.components.items():
        for name, info in components.items():
            by_plugin.setdefault(info.plugin, []).append(f"{kind}: {name}")
    table = Table(title="gptf plugins", title_justify="left")
    for column in ("plugin", "origin", "location", "registers"):
        table.add_column(column)
    for info in registry.plugins:
        registers = ", ".join(by_plugin.get(info.name, [])) or "-"
        if not info.ok:
            registers = f"[red]FAILED: {info.error}[/]"
        version = f" {info.version}" if info.version else ""
        table.add_row(info.name, info.origin, f"{info.location}{version}", registers)
    console.print(table)
    failed = [i for i in registry.plugins if not i.ok]
    if failed:
        err_console.print(f"[yellow]{len(failed)} plugin(s) failed to load and were skipped[/]")


@data_app.command("check")
@friendly_errors
def data_check(
    files: Annotated[list[Path], typer.Argument(help="JSONL files, e.g. data/train.jsonl data/val.jsonl")],
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe whose tokenizer and seq_len are used [default: recipes/teacher_3m.yaml]")
    ] = None,
) -> None:
    """Validate JSONL data: bad lines, counts, token lengths, duplicates, leakage between files."""
    from gptf.tools.data_check import check_files, format_report

    encode, seq_len = _recipe_encoder(recipe)
    report = check_files(list(files), encode=encode, seq_len=seq_len)
    console.print(format_report(report), markup=False)
    if not report.ok:
        raise typer.Exit(1)


def _recipe_encoder(recipe_path: Path | None) -> tuple[Callable[[str], list[int]] | None, int]:
    """The tokenizer a recipe would use (its file, or trained in memory like ``gptf run``)."""
    from gptf.build.components import new_tokenizer, registry_for
    from gptf.data import read_jsonl, training_texts
    from gptf.recipe import load_recipe

    default = Path("recipes/teacher_3m.yaml")
    if recipe_path is None:
        if not default.is_file():
            err_console.print("[yellow]no recipe given: token lengths are not checked (use --recipe)[/]")
            return None, 128
        recipe_path = default
    loaded = load_recipe(recipe_path)
    registry = registry_for(loaded)
    tokenizer = new_tokenizer(loaded.recipe, registry)
    path = Path(loaded.recipe.tokenizer.path)
    if path.is_file():
        tokenizer.load(path)
    else:
        tokenizer.train(training_texts(read_jsonl(loaded.recipe.data.train)))
    return tokenizer.encode, loaded.recipe.model.seq_len
