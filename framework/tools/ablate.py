"""``gptf ablate``: change one component, keep everything else, and compare honestly.

    gptf ablate recipes/teacher_3m.yaml --swap model.positional=rope,learned,none --steps 300

Every ``--swap KEY=A,B,C`` lists values to compare; several swaps give their cross
product (the *grid*). Each variant is trained once per seed (``training.seed`` = 0 .. K-1)
as an ordinary ``gptf run``, so the k-th run of every variant starts from the same random
state, reads the training samples in the same order (the order depends only on the seed)
and gets the same number of steps. Only the swapped keys differ.

Output folder (default ``ablations/<recipe name>/``)::

    runs/<variant>-seed<k>/      one ordinary run directory each (gptf generate --ckpt works)
    ablation.md, ablation.csv    the comparison table (also printed)
    ablation.json                everything: settings, every run, every loss curve
    val_loss.png                 validation loss of all variants on one chart

Re-running the same command skips runs that already finished: each run directory keeps
``ablate_run.json`` with a key made from its fully resolved recipe and the data files'
fingerprints, so a changed recipe or dataset is trained again, an unchanged one is not.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from gptf import __version__
from gptf.build.components import registry_for
from gptf.errors import GptfError, Interrupted, RecipeError, TrainingStopped
from gptf.plots import PLOTS_HINT, Band, read_loss_curves, save_val_curves, warm_up
from gptf.recipe import LoadedRecipe, load_recipe, recipe_to_dict
from gptf.run import prepare_tokenizer, run_recipe
from gptf.train.run_files import RunFiles, file_sha256, write_json, write_text

RUN_RECORD = "ablate_run.json"  # inside each run directory: its key and results


# ------------------------------------------------------------------ the grid


@attrs.frozen
class Swap:
    """``model.positional=rope,learned,none`` -> key and the values (YAML text each)."""

    key: str
    values: list[str]

    @property
    def short(self) -> str:
        """``model.positional`` -> ``positional``; ``tokenizer.type`` -> ``tokenizer``."""
        parts = self.key.split(".")
        return parts[-2] if parts[-1] in ("type", "name") and len(parts) > 1 else parts[-1]


def split_values(text: str) -> list[str]:
    """Split at commas that are not inside ``[]``, ``{}`` or quotes, so a value may be
    ``{name: warmup_cosine, warmup_ratio: 0.1}``."""
    values, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += ch
    values.append(current.strip())
    return values


def parse_swap(text: str) -> Swap:
    key, sep, raw = text.partition("=")
    values = split_values(raw) if sep else []
    if not key.strip() or not values or not all(values) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key.strip()):
        raise RecipeError(
            "--swap",
            [f"'{text}' must look like KEY=A,B,C (e.g. --swap model.positional=rope,learned,none)"],
        )
    if len(set(values)) != len(values):
        raise RecipeError("--swap", [f"'{text}' lists a value twice"])
    return Swap(key.strip(), values)


@attrs.frozen
class Variant:
    """One point of the grid: a value for every swap."""

    label: str  # "positional=rope"
    overrides: list[str]  # ["model.positional=rope"]
    slug: str  # a folder name: "positional-rope"


def grid(swaps: Sequence[Swap]) -> list[Variant]:
    """The cross product of the swaps, in the order given (no swaps: one baseline)."""
    shorts = [s.short for s in swaps]
    names = [s.short if shorts.count(s.short) == 1 else s.key for s in swaps]
    variants = []
    for values in itertools.product(*(s.values for s in swaps)):
        label = " ".join(f"{n}={v}" for n, v in zip(names, values, strict=True)) or "baseline"
        overrides = [f"{s.key}={v}" for s, v in zip(swaps, values, strict=True)]
        slug = re.sub(r"[^A-Za-z0-9_.]+", "-", label).strip("-")[:60] or "variant"
        variants.append(Variant(label, overrides, slug))
    slugs = [v.slug for v in variants]
    return [
        attrs.evolve(v, slug=f"{v.slug}-{_digest(v.label)[:6]}") if slugs.count(v.slug) > 1 else v for v in variants
    ]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ planning


@attrs.frozen
class Settings:
    """What the command line asked for."""

    recipe: Path
    swaps: list[Swap]
    overrides: list[str] = attrs.field(factory=list)  # applied to every variant
    steps: int | None = None  # None: the recipe's training.max_steps
    seeds: int = 1
    out: Path | None = None
    eval_interval: int | None = None  # None: about 10 points per curve

    def command(self) -> str:
        parts = ["gptf ablate", str(self.recipe), *self.overrides]
        parts += [f"--swap {s.key}={','.join(s.values)}" for s in self.swaps]
        if self.steps is not None:
            parts.append(f"--steps {self.steps}")
        if self.seeds != 1:
            parts.append(f"--seeds {self.seeds}")
        if self.eval_interval is not None:
            parts.append(f"--eval-interval {self.eval_interval}")
        if self.out is not None:
            parts.append(f"--out {self.out}")
        return " ".join(parts)


@attrs.frozen
class PlannedRun:
    variant: Variant
    seed: int
    loaded: LoadedRecipe
    key: str

    @property
    def run_dir(self) -> Path:
        return self.loaded.recipe.run_dir


@attrs.frozen
class Plan:
    settings: Settings
    base: LoadedRecipe
    out: Path
    steps: int
    eval_interval: int
    variants: list[Variant]
    runs: list[PlannedRun]


def make_plan(settings: Settings) -> Plan:
    """Resolve and validate every run before training any, so a typo in the last
    variant is reported in a second, not after the first variants have trained."""
    base = load_recipe(settings.recipe, settings.overrides)
    steps = settings.steps or base.recipe.training.max_steps
    eval_interval = settings.eval_interval or min(base.recipe.training.eval_interval, max(1, steps // 10))
    out = settings.out or Path("ablations") / base.recipe.name
    variants = grid(settings.swaps)
    tokenizer_swaps = [s for s in settings.swaps if s.key.startswith("tokenizer.") and s.key != "tokenizer.path"]
    runs, problems = [], []
    for variant in variants:
        for seed in range(settings.seeds):
            run_dir = out / "runs" / f"{variant.slug}-seed{seed}"
            overrides = [
                *settings.overrides,
                *variant.overrides,
                f"training.seed={seed}",
                f"training.max_steps={steps}",
                f"training.eval_interval={eval_interval}",
                f"output_dir={json.dumps(str(run_dir))}",  # JSON quotes are YAML quotes
                f"name={base.recipe.name}.{variant.slug}.seed{seed}",
            ]
            if tokenizer_swaps:  # each tokenizer choice trains and keeps its own file
                overrides.append(f"tokenizer.path={json.dumps(tokenizer_file(out, variant, tokenizer_swaps))}")
            try:
                loaded = load_recipe(settings.recipe, overrides)
                registry_for(loaded)  # every component exists and its parameters fit
            except RecipeError as exc:
                problems += [f"{variant.label}: {p}" for p in exc.problems]
                break
            runs.append(PlannedRun(variant, seed, loaded, run_key(loaded)))
    if problems:
        raise RecipeError(str(settings.recipe), problems)
    return Plan(settings, base, out, steps, eval_interval, variants, runs)


def tokenizer_file(out: Path, variant: Variant, swaps: list[Swap]) -> str:
    """One file per tokenizer choice, shared by the variants that make the same choice."""
    choice = [o for o in variant.overrides if any(o.startswith(f"{s.key}=") for s in swaps)]
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", " ".join(choice)).strip("-")[:60]
    return str(out / "tokenizers" / f"{slug}-{_digest(' '.join(choice))[:6]}.json")


def run_key(loaded: LoadedRecipe) -> str:
    """Fingerprint of what a run computes: its resolved recipe and its data files."""
    recipe = recipe_to_dict(loaded.recipe)
    for where in ("output_dir", "name"):
        recipe.pop(where, None)
    data = [p for p in (loaded.recipe.data.train, loaded.recipe.data.val) if p]
    fingerprints = {p: file_sha256(Path(p)) if Path(p).is_file() else None for p in data}
    return _digest(json.dumps({"recipe": recipe, "data": fingerprints}, sort_keys=True, ensure_ascii=False))


def finished_record(run: PlannedRun) -> dict[str, Any] | None:
    """The saved result of a run that already finished with the same key, else None."""
    path = run.run_dir / RUN_RECORD
    if not (path.is_file() and RunFiles(run.run_dir).info.is_file()):
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("key") == run.key and record.get("status") == "ok" else None


# ------------------------------------------------------------------ running


def run_one(run: PlannedRun, on_step: Any) -> dict[str, Any]:
    """Train one run as ``gptf run`` would; its full log goes to ``train.log``."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / RUN_RECORD).unlink(missing_ok=True)
    record: dict[str, Any] = {
        "key": run.key,
        "variant": run.variant.label,
        "overrides": run.variant.overrides,
        "seed": run.seed,
        "run_dir": str(run.run_dir),
    }
    with open(run.run_dir / "train.log", "w", encoding="utf-8") as log:
        console = Console(file=log, width=120, highlight=False, no_color=True)
        try:
            result = run_recipe(run.loaded, console, on_step=on_step, final_eval=False)  # losses suffice here
        except Interrupted:
            raise  # Ctrl+C stops the whole grid
        except TrainingStopped as exc:  # e.g. the loss diverged: a result, not a crash
            return {**record, "status": "failed", "error": exc.message}
    info = RunFiles(run.run_dir).read_info()
    curves = read_loss_curves(RunFiles(run.run_dir).metrics)
    train_s = float(info.get("train_seconds") or 0.0)
    record.update(
        status="ok",
        parameters=info.get("parameters"),
        steps=info.get("steps"),
        wall_s=round(result.seconds, 2),
        train_s=train_s,
        tokens_per_s=round(info.get("tokens_seen", 0) / train_s, 1) if train_s > 0 else None,
        final_train_loss=result.train_loss,
        final_val_loss=result.val_loss,
        best_val_loss=info.get("best_val_loss"),
        demo=info.get("demo", []),
        train_curve=curves.train,
        val_curve=curves.val,
    )
    write_json(run.run_dir / RUN_RECORD, record)
    return record


def run_ablation(settings: Settings, console: Console) -> dict[str, Any]:
    """Plan, train what is not done yet, then write and print the comparison."""
    started = time.perf_counter()
    plan = make_plan(settings)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for run in plan.runs:
        done = finished_record(run)
        if done is not None:
            records[run.key] = done
        else:
            todo.append(run)
    _print_header(plan, len(plan.runs) - len(todo), console)
    prepare_tokenizers(todo, console)
    _train_all(plan, todo, records, console)
    summary = summarise(plan, records, time.perf_counter() - started)
    _write_outputs(plan, summary, console)
    return summary


def prepare_tokenizers(todo: list[PlannedRun], console: Console) -> None:
    """Train missing tokenizer files before the grid starts, so no variant's wall time
    includes training the tokenizer that all of them share (nor loading the plot library)."""
    from gptf.data import read_jsonl

    warm_up()
    seen: set[str] = set()
    for run in todo:
        cfg = run.loaded.recipe.tokenizer
        if cfg.path in seen or cfg.rebuild or Path(cfg.path).is_file():
            continue
        seen.add(cfg.path)
        registry = registry_for(run.loaded)
        prepare_tokenizer(run.loaded.recipe, registry, read_jsonl(run.loaded.recipe.data.train), console)


def _print_header(plan: Plan, skipped: int, console: Console) -> None:
    b = plan.base
    console.rule(f"[bold]gptf ablate[/]  {b.recipe.name}")
    console.print(f"recipe chain: {' -> '.join(p.name for p in b.chain)}", highlight=False, markup=False)
    console.print(f"variants: {', '.join(v.label for v in plan.variants)}", highlight=False, markup=False)
    console.print(
        f"{len(plan.runs)} runs = {len(plan.variants)} variants x {plan.settings.seeds} seed(s) "
        f"(training.seed 0..{plan.settings.seeds - 1}), {plan.steps} steps each, "
        f"validation every {plan.eval_interval} steps; same data order and initial seed for every variant",
        highlight=False,
    )
    console.print(f"output: {plan.out}", highlight=False, markup=False)
    if skipped:
        console.print(
            f"{skipped} run(s) already finished with the same recipe and data: skipped", highlight=False, markup=False
        )


def _train_all(plan: Plan, todo: list[PlannedRun], records: dict[str, dict[str, Any]], console: Console) -> None:
    if not todo:
        return
    live = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps  loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        disable=not live,
    )
    task = progress.add_task("grid", total=len(todo) * plan.steps, loss="-")
    with progress:
        for number, run in enumerate(todo, start=1):
            name = f"[{number}/{len(todo)}] {run.variant.label} seed {run.seed}"
            progress.update(task, description=name)
            if not live:
                console.print(f"{name}: training ({run.run_dir}/train.log)", highlight=False, markup=False)
            done_before = (number - 1) * plan.steps

            def on_step(metrics: dict[str, Any], done_before: int = done_before) -> None:
                progress.update(task, completed=done_before + metrics["step"], loss=f"{metrics['loss']:.4f}")

            try:
                record = run_one(run, on_step)
            except Interrupted as exc:
                raise Interrupted(
                    f"ablation interrupted during {name}",
                    hint="run the same gptf ablate command again: finished runs are skipped, this one starts over",
                ) from exc
            records[run.key] = record
            progress.update(task, completed=number * plan.steps)
            if record["status"] == "ok":
                line = (
                    f"{name}: done in {record['wall_s']:.1f}s, train loss {_num(record['final_train_loss'])}, "
                    f"val loss {_num(record['final_val_loss'])}"
                )
            else:
                line = f"{name}: FAILED: {record['error']}"
            (progress.console if live else console).print(line, highlight=False, markup=False)


# ------------------------------------------------------------------ summarising


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mean_and_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean, and the standard deviation over seeds (None with fewer than two)."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    spread = statistics.stdev(present) if len(present) > 1 else None
    return statistics.fmean(present), spread


def _with_spread(mean: float | None, spread: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {spread:.4f}" if spread is not None else f"{mean:.4f}"


def summarise(plan: Plan, records: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    """One row per variant (means over seeds) plus every run's record."""
    prompts = list(plan.base.recipe.demo_prompts)
    rows = []
    for variant in plan.variants:
        runs = [records[r.key] for r in plan.runs if r.variant == variant and r.key in records]
        ok = [r for r in runs if r["status"] == "ok"]
        train_mean, train_spread = mean_and_spread([r["final_train_loss"] for r in ok])
        val_mean, val_spread = mean_and_spread([r["final_val_loss"] for r in ok])
        answers = {d["prompt"]: d["answer"] for d in ok[0]["demo"]} if ok else {}
        rows.append(
            {
                "variant": variant.label,
                "overrides": variant.overrides,
                "seeds_ok": len(ok),
                "seeds_failed": len(runs) - len(ok),
                "errors": [r["error"] for r in runs if r["status"] != "ok"],
                "parameters": ok[0]["parameters"] if ok else None,
                "wall_s": mean_and_spread([r["wall_s"] for r in ok])[0],
                "tokens_per_s": mean_and_spread([r["tokens_per_s"] for r in ok])[0],
                "final_train_loss": train_mean,
                "final_train_loss_std": train_spread,
                "final_val_loss": val_mean,
                "final_val_loss_std": val_spread,
                "demo": [{"prompt": p, "answer": answers.get(p)} for p in prompts],
                "run_dirs": [r["run_dir"] for r in runs],
                "val_curve": _mean_curve([r["val_curve"] for r in ok]),
            }
        )
    return {
        "gptf_version": __version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "command": plan.settings.command(),
        "recipe": str(plan.settings.recipe),
        "recipe_chain": [str(p) for p in plan.base.chain],
        "steps": plan.steps,
        "seeds": plan.settings.seeds,
        "eval_interval": plan.eval_interval,
        "swaps": [{"key": s.key, "values": s.values} for s in plan.settings.swaps],
        "seconds": round(seconds, 1),
        "variants": rows,
        "runs": [records[r.key] for r in plan.runs if r.key in records],
    }


def _mean_curve(curves: list[list[Any]]) -> dict[str, list[float]]:
    """Mean, lowest and highest validation loss at each step all seeds evaluated."""
    if not curves:
        return {"steps": [], "mean": [], "low": [], "high": []}
    by_step = [dict((int(s), float(v)) for s, v in c) for c in curves]
    steps = sorted(set.intersection(*(set(c) for c in by_step)))
    values = [[c[s] for c in by_step] for s in steps]
    return {
        "steps": steps,
        "mean": [statistics.fmean(v) for v in values],
        "low": [min(v) for v in values],
        "high": [max(v) for v in values],
    }


# ------------------------------------------------------------------ writing


def _columns(summary: dict[str, Any]) -> list[str]:
    prompts = [d["prompt"] for d in summary["variants"][0]["demo"]] if summary["variants"] else []
    return ["variant", "parameters", "wall time (s)", "tokens/s", "final train loss", "final val loss", *prompts]


def _cells(row: dict[str, Any]) -> list[str]:
    failed = f" ({row['seeds_failed']} failed)" if row["seeds_failed"] else ""
    return [
        row["variant"] + failed,
        "-" if row["parameters"] is None else f"{row['parameters']:,}",
        _num(row["wall_s"], 1),
        "-" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,.0f}",
        _with_spread(row["final_train_loss"], row["final_train_loss_std"]),
        _with_spread(row["final_val_loss"], row["final_val_loss_std"]),
        *[d["answer"] if d["answer"] is not None else "-" for d in row["demo"]],
    ]


def _footnote(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    spread = "± is the standard deviation over the seeds; " if seeds > 1 else ""
    return (
        f"{summary['steps']} steps per run, {seeds} seed(s) per variant (training.seed 0..{seeds - 1}), "
        f"same data order and initial seed for every variant; {spread}losses are cross-entropy per answer token, "
        f"final = after the last step; demo answers are greedy, from seed 0. "
        f"wall time = the whole run (training, validation, saving, quantizing, demo answers); "
        f"gptf {summary['gptf_version']}, torch {summary['torch_version']}, {summary['threads']} thread(s); "
        f"the whole command took {summary['seconds']:.0f} s."
    )


def markdown_table(summary: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    columns = _columns(summary)
    lines = [
        f"# Ablation: {Path(summary['recipe']).name}",
        "",
        f"`{summary['command']}`",
        "",
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * 5 + ["---"] * (len(columns) - 6)) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in _cells(row)) + " |" for row in summary["variants"]]
    lines += ["", _footnote(summary), ""]
    return "\n".join(lines)


def csv_table(summary: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    prompts = [d["prompt"] for d in summary["variants"][0]["demo"]] if summary["variants"] else []
    writer.writerow(
        [
            "variant",
            "overrides",
            "seeds",
            "parameters",
            "wall_s",
            "tokens_per_s",
            "final_train_loss",
            "final_train_loss_std",
            "final_val_loss",
            "final_val_loss_std",
            *prompts,
        ]
    )
    for row in summary["variants"]:
        writer.writerow(
            [
                row["variant"],
                " ".join(row["overrides"]),
                row["seeds_ok"],
                row["parameters"],
                row["wall_s"],
                row["tokens_per_s"],
                row["final_train_loss"],
                row["final_train_loss_std"],
                row["final_val_loss"],
                row["final_val_loss_std"],
                *[d["answer"] for d in row["demo"]],
            ]
        )
    return buffer.getvalue()


def rich_table(summary: dict[str, Any], answer_width: int = 24) -> Table:
    table = Table(title=Text(f"ablation: {summary['command']}"), title_justify="left")
    for i, column in enumerate(_columns(summary)):
        table.add_column(column, justify="right" if 0 < i < 6 else "left", overflow="fold")
    for row in summary["variants"]:
        cells = _cells(row)
        table.add_row(*map(Text, cells[:6]), *[Text(_shorten(a, answer_width)) for a in cells[6:]])  # no markup
    return table


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _write_outputs(plan: Plan, summary: dict[str, Any], console: Console) -> None:
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "ablation.md", markdown_table(summary))
    write_text(out / "ablation.csv", csv_table(summary))
    write_json(out / "ablation.json", summary)
    bands = [
        Band(row["variant"], row["val_curve"]["steps"], row["val_curve"]["mean"], row["val_curve"]["low"],
             row["val_curve"]["high"])
        for row in summary["variants"]
        if row["val_curve"]["steps"]
    ]  # fmt: skip
    picture = save_val_curves(bands, out / "val_loss.png", f"{plan.base.recipe.name}: validation loss")
    console.print(rich_table(summary))
    console.print(_footnote(summary), highlight=False, markup=False)
    console.print(f"table    {out / 'ablation.md'}  {out / 'ablation.csv'}", highlight=False, markup=False)
    console.print(f"all data {out / 'ablation.json'}", highlight=False, markup=False)
    if picture is not None:
        console.print(f"chart    {picture}", highlight=False, markup=False)
    else:
        console.print(
            f"chart    (no picture: matplotlib is not installed; {PLOTS_HINT})", highlight=False, markup=False
        )
    failed = sum(row["seeds_failed"] for row in summary["variants"])
    if failed:
        console.print(f"[yellow]{failed} run(s) failed; see their train.log; re-running retries them[/]")


def check_swaps_given(swaps: Sequence[str]) -> list[Swap]:
    """Parse every ``--swap``; the same key twice is a mistake."""
    parsed = [parse_swap(s) for s in swaps]
    keys = [s.key for s in parsed]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise GptfError(f"--swap {repeated[0]} is given twice; list all its values in one --swap, separated by commas")
    return parsed
