"""The exploring commands: ``gptf ablate``, ``gptf attention``, ``gptf tokenize`` and
``gptf plugin check``.

Importing this module registers them on :data:`gptf.cli.app.app` (see :mod:`gptf.cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from gptf.cli.app import (
    NoVerifyOption,
    OverridesArg,
    RecipeArg,
    TrustPluginsOption,
    app,
    console,
    err_console,
    friendly_errors,
)

plugin_app = typer.Typer(help="Check a plugin against the component contracts.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")


@app.command()
@friendly_errors
def ablate(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    swap: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=A,B,C values to compare; repeat for a grid. A value may carry parameters: "
            "--swap 'training.scheduler=constant,{name: warmup_cosine, warmup_ratio: 0.1}'. "
            "Naming the recipe's own component keeps the recipe's parameters for it"
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="training.max_steps of every run")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Runs per variant, with training.seed 0..K-1 (mean ± std)")] = 1,
    tune: Annotated[
        str | None,
        typer.Option(
            help="KEY=A,B,...: train every variant at each value (e.g. training.lr=6e-4,1e-3,2e-3) and compare "
            "each at its best (chosen on val loss) and at the recipe's value"
        ),
    ] = None,
    budget: Annotated[
        str, typer.Option(help="steps: equal steps for every variant; seconds: equal training time")
    ] = "steps",
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="Runs trained at once, one process each [default: one per core, 1 thread each]"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder [default: ablations/<recipe name>]")] = None,
    eval_interval: Annotated[int | None, typer.Option(min=1, help="Validate every N steps [default: ~3/run]")] = None,
) -> None:
    """Train every variant with matched seeds, data order and budget; compare them in a table, a chart and
    a reading (val loss, held-out answers, stability)."""
    from gptf.tools.ablate import Settings, check_budget, check_swaps_given, parse_swap, run_ablation

    settings = Settings(
        recipe,
        check_swaps_given(swap or []),
        overrides or [],
        steps,
        seeds,
        out,
        eval_interval,
        tune=parse_swap(tune, "--tune") if tune else None,
        budget=check_budget(budget),
        jobs=jobs,
    )
    run_ablation(settings, console)


@app.command()
@friendly_errors
def attention(
    ckpt: Annotated[Path, typer.Option(help="Run directory, e.g. checkpoints/teacher_3m")],
    prompt: Annotated[str, typer.Option(help="The question to look at")],
    out: Annotated[Path | None, typer.Option(help="Output folder [default: <ckpt>/attention]")] = None,
    answer: Annotated[bool, typer.Option(help="Also include the model's greedy answer")] = False,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """Save heatmaps of every layer's attention, one per head, for a prompt."""
    from gptf.run import load_run
    from gptf.tools.insight import attention_maps, ids_table, save_attention

    run = load_run(ckpt, trust_plugins=trust_plugins, verify=not no_verify)
    maps = attention_maps(run, prompt, with_answer=answer)
    table, _ = ids_table(run.tokenizer, maps.ids)  # the heatmaps' rows and columns, in order
    console.print(table)
    if maps.answer is not None:
        console.print(f"answer: {maps.answer}", markup=False)
    for path in save_attention(maps, prompt, out or ckpt / "attention", console):
        console.print(f"saved {path}", highlight=False)


@app.command()
@friendly_errors
def tokenize(
    text: Annotated[str, typer.Argument(help="Text to split into tokens")],
    ckpt: Annotated[Path | None, typer.Option(help="Use this run's tokenizer")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Use this recipe's tokenizer")] = None,
    as_prompt: Annotated[bool, typer.Option(help="Show it as the model sees a question (<bos>用户:...助手:)")] = False,
    trust_plugins: TrustPluginsOption = False,
) -> None:
    """Show the tokens of a text: each token, its id and the bytes it stands for."""
    from gptf.tools.insight import load_tokenizer, tokens_table

    tokenizer = load_tokenizer(ckpt, recipe, err_console, trust_plugins=trust_plugins)
    table, summary = tokens_table(tokenizer, text, as_prompt=as_prompt)
    console.print(table)
    console.print(summary, highlight=False)


@plugin_app.command("check")
@friendly_errors
def plugin_check(
    target: Annotated[str, typer.Argument(help="A .py file, a package/project folder, or a module name")],
) -> None:
    """Run the contract tests on every component a plugin registers."""
    from gptf.tools.plugin_check import check_target

    reports = check_target(target)
    colours = {"pass": "green", "fail": "red", "skip": "yellow"}
    for report in reports:
        table = Table(title=Text(f"plugin check: {report.plugin} ({', '.join(report.components) or 'nothing'})"))
        for column in ("component", "check", "result", "details"):
            table.add_column(column, overflow="fold")
        for f in report.findings:
            table.add_row(Text(f.component), f.check, Text(f.status, style=colours[f.status]), Text(f.detail))
        console.print(table)
    failed = [f for r in reports for f in r.findings if f.status == "fail"]
    if failed:
        err_console.print(f"[bold red]{len(failed)} check(s) failed[/]")
        for f in failed:
            err_console.print(f"  {f.component} · {f.check}: {f.detail}", markup=False)
        raise typer.Exit(1)
    console.print("[bold green]all checks passed[/]")
