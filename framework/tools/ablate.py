"""``gptf ablate``: change one component, keep everything else, and compare honestly.

    gptf ablate recipes/teacher_3m.yaml --swap model.positional=rope,learned,none --steps 300 \\
        --seeds 2 --tune training.lr=6e-4,2e-3

Every ``--swap KEY=A,B,C`` lists values to compare; several swaps give their cross
product (the *grid*). Each variant is trained once per seed (``training.seed`` = 0 .. K-1)
as an ordinary ``gptf run``, so the k-th run of every variant starts from the same random
state, reads the training samples in the same order (the order depends only on the seed)
and gets the same budget. Only the swapped keys differ. A swap that names the recipe's own
component keeps the recipe's parameters for it; labels show them (``scheduler=warmup_cosine(
warmup_ratio=0.05, min_lr_ratio=0.1)``).

* ``--tune training.lr=6e-4,2e-3``: every variant is trained at every value (the recipe's own
  value is added if missing); the table shows each variant at its best value, chosen on the
  val loss (never the test split), and at the recipe's value. A component that only looks
  worse at the recipe's learning rate is then told apart from one that is worse.
* ``--seeds K``: mean ± standard deviation over seeds; seed k of every variant shares its initial
  state and data order, so differences are taken seed by seed and called *clear* only when a
  paired t-test over the seeds says so at the 5% level, else *within noise*.
* ``--budget steps`` (default) compares at equal steps; ``--budget seconds`` at equal training
  time: every variant's seconds per step is measured first (8 steps, the first 2 not counted),
  the first variant gets ``--steps`` steps and every other one as many as fit in the same time.
* ``--jobs N`` trains N runs at once, each in its own process (results are identical to one at
  a time: each run is seeded and uses the same number of threads either way).
* Every run ends with answers to ``data.val`` (greedy, or by beam search: ``generation.beams``),
  scored (char F1, readable share), and
  with the instability check of :mod:`gptf.train.stability`; both are columns of the table.
* A run is a ``gptf run`` without what no comparison reads (:data:`ABLATION_EXTRAS`: periodic
  checkpoints, ``loss.png``), validating about :data:`CURVE_POINTS` times (``--eval-interval``),
  with the data tokenised once per process (:data:`SPLITS`). Measured with
  ``benchmarks/ablate_overhead.py``; its training, losses and answers are those of ``gptf run``.

Output folder (default ``ablations/<recipe name>/``)::

    runs/<variant>[-<tuned value>]-seed<k>/   one ordinary run directory each (gptf generate --ckpt works)
    ablation.md, ablation.csv    the comparison table (also printed) and, in ablation.md, a reading
    ablation.json                everything: settings, every run, every loss curve
    val_loss.png                 validation loss of all variants (dashed: at the recipe's value)

Re-running the same command skips runs that already finished: each run directory keeps
``ablate_run.json`` with a key made from its fully resolved recipe and the data files'
fingerprints, so a changed recipe or dataset is trained again, an unchanged one is not.
The tables and the reading are in :mod:`gptf.tools.ablate_report`.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gptf.build.components import registry_for
from gptf.build.speed import PrecisionChoice, choose_precision
from gptf.errors import GptfError, Interrupted, RecipeError, TrainingStopped
from gptf.plots import read_loss_curves, warm_up
from gptf.recipe import LoadedRecipe, load_recipe, parse_yaml, recipe_to_dict
from gptf.run import Extras, SplitCache, prepare_tokenizer, run_recipe, seconds_per_step
from gptf.tools.ablate_report import summarise, write_outputs
from gptf.train.run_files import RunFiles, file_sha256, write_json

RUN_RECORD = "ablate_run.json"  # inside each run directory: its key and results
BUDGETS = ("steps", "seconds")
#: Default --jobs: one run per core with one thread each. Measured for issue 11 on the 2-core class
#: machine (teacher recipe, under load): 2 processes x 1 thread gave 3-12x the steps per second of
#: 1 process x 2 threads (README, "--jobs"). See :func:`default_jobs`.
PARALLEL_FASTER = True
#: What an ablation run does without (gptf.run.Extras): no resumable checkpoint every save_interval
#: steps (an unfinished run is trained again from the start) and no loss.png per run (the ablation
#: draws val_loss.png for the grid), and no answer filter calibrated on val (threshold: auto stays
#: off, so the char F1 scores each variant's own answers), and no generation.memory (the val answers are
#: each variant's model alone, not lifted alike by the memory of the taught answers). The training and its
#: losses are unchanged.
ABLATION_EXTRAS = Extras(checkpoints=False, loss_plot=False, calibrate_filter=False, memory=False)
#: Validation-loss points per curve when --eval-interval is not given (never fewer than the recipe's
#: training.eval_interval gives). Each point is a pass over all of data.val: on the teacher recipe as much
#: compute as ~5 training steps (1.3 s of a ~105 s, 300-step run), so the 10 points of before took 11% of a
#: run. At 300 steps, 3 points are the teacher's own eval_interval (100): an ablation run then validates
#: exactly when a plain gptf run does. The last point is always after the last step: the final val loss,
#: on the whole val set. --eval-interval asks for more.
CURVE_POINTS = 3
#: The data this process has tokenised, for its next runs (every worker of --jobs N has its own): the
#: variants of a grid mostly share the data and the tokenizer (0.8 s a run on the teacher recipe).
SPLITS = SplitCache()


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


def parse_swap(text: str, option: str = "--swap") -> Swap:
    key, sep, raw = text.partition("=")
    values = split_values(raw) if sep else []
    if not key.strip() or not values or not all(values) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key.strip()):
        example = "training.lr=6e-4,2e-3" if option == "--tune" else "model.positional=rope,learned,none"
        raise RecipeError(option, [f"'{text}' must look like KEY=A,B,C (e.g. {option} {example})"])
    if len(set(values)) != len(values):
        raise RecipeError(option, [f"'{text}' lists a value twice"])
    return Swap(key.strip(), values)


@attrs.frozen
class Variant:
    """One point of the grid: a value for every swap."""

    label: str  # "positional=rope"; with the component's parameters once resolved
    overrides: list[str]  # ["model.positional=rope"]
    slug: str  # a folder name: "positional-rope"


def grid(swaps: Sequence[Swap]) -> list[Variant]:
    """The cross product of the swaps, in the order given (no swaps: one baseline)."""
    names = swap_names(swaps)
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


def swap_names(swaps: Sequence[Swap]) -> list[str]:
    shorts = [s.short for s in swaps]
    return [s.short if shorts.count(s.short) == 1 else s.key for s in swaps]


def resolved_label(swaps: Sequence[Swap], data: dict[str, Any]) -> str:
    """The label of a variant as its recipe resolved it: ``scheduler=inverse_sqrt(warmup_steps=15)``."""
    parts = [f"{name}={value_text(_at(data, s.key))}" for name, s in zip(swap_names(swaps), swaps, strict=True)]
    return " ".join(parts) or "baseline"


def _at(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def value_text(value: Any) -> str:
    """A recipe value in a few characters: ``6e-4`` -> ``0.0006``; a component with its parameters."""
    if isinstance(value, dict) and "name" in value:
        params = ", ".join(f"{k}={value_text(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({params})" if params else str(value["name"])
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


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
    eval_interval: int | None = None  # None: about CURVE_POINTS points per curve
    tune: Swap | None = None  # --tune training.lr=6e-4,2e-3
    budget: str = "steps"  # "steps" or "seconds"
    jobs: int | None = None  # None: default_jobs()

    def command(self) -> str:
        parts = ["gptf ablate", str(self.recipe), *self.overrides]
        parts += [f"--swap {s.key}={','.join(s.values)}" for s in self.swaps]
        if self.tune is not None:
            parts.append(f"--tune {self.tune.key}={','.join(self.tune.values)}")
        options = {
            "steps": self.steps,
            "seeds": self.seeds if self.seeds != 1 else None,
            "budget": self.budget if self.budget != "steps" else None,
            "jobs": self.jobs,
            "eval-interval": self.eval_interval,
            "out": self.out,
        }
        parts += [f"--{flag} {value}" for flag, value in options.items() if value is not None]
        return " ".join(parts)


@attrs.frozen
class PlannedRun:
    variant: Variant
    seed: int
    loaded: LoadedRecipe
    key: str
    tune: str | None = None  # the tuned value (YAML text) of this run; None without --tune

    @property
    def run_dir(self) -> Path:
        return self.loaded.recipe.run_dir


@attrs.frozen
class Plan:
    settings: Settings
    base: LoadedRecipe
    out: Path
    steps: int  # the first variant's (every variant's with --budget steps)
    eval_interval: int
    variants: list[Variant]
    runs: list[PlannedRun]
    tune_values: list[str | None]  # [None] without --tune
    recipe_tune_value: str | None  # the recipe's own value of the tuned key, as one of tune_values
    threads: int | None  # training.threads of every run (None: PyTorch's default)
    jobs: int
    steps_by_variant: dict[str, int] = attrs.field(factory=dict)  # slug -> steps
    step_seconds: dict[str, float] = attrs.field(factory=dict)  # slug -> measured seconds per step
    precision_note: str | None = None  # training.precision: auto, decided once for every run


def default_jobs(runs: int, threads: int | None) -> int:
    """Runs at once when ``--jobs`` is not given: one per core with one thread each, measured faster
    than one run using every core on the class machine (a 3.4M model keeps one core busy; a
    second thread mostly waits); one at a time when the recipe asks for more than one thread."""
    cores = os.cpu_count() or 1
    if not PARALLEL_FASTER or (threads is not None and threads > 1):
        return 1
    return max(1, min(runs, cores))


def tune_values(tune: Swap | None, base: LoadedRecipe) -> tuple[list[str | None], str | None]:
    """The tuned values in order (numbers ascending), with the recipe's own value added if missing."""
    if tune is None:
        return [None], None
    if "auto" in tune.values:
        raise GptfError(
            f"--tune {tune.key}=auto is not available: list the values to try",
            hint=f"e.g. --tune {tune.key}=3e-4,6e-4,1e-3,2e-3 (every variant is trained at each)",
        )
    own = _at(recipe_to_dict(base.recipe), tune.key)
    if own is None:
        raise RecipeError("--tune", [f"{tune.key}: the recipe has no such setting"])
    parsed = {}
    for text in tune.values:
        value = parse_yaml(text, f"--tune {tune.key}={text}")
        parsed[value_text(value) if _is_number(value) else text] = value  # numbers as the table shows them
    values = list(parsed)
    mine = next((v for v, p in parsed.items() if p == own), None)
    if mine is None:
        mine = value_text(own) if _is_number(own) else json.dumps(own, ensure_ascii=False)  # JSON is YAML
        values.append(mine)
        parsed[mine] = own
    if all(_is_number(p) for p in parsed.values()):
        values.sort(key=lambda v: parsed[v])
    return list(values), mine


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def make_plan(settings: Settings, steps_by_variant: dict[str, int] | None = None) -> Plan:
    """Resolve and validate every run before training any, so a typo in the last
    variant is reported in a second, not after the first variants have trained."""
    base = load_recipe(settings.recipe, settings.overrides)
    steps = settings.steps or base.recipe.training.max_steps
    eval_interval = settings.eval_interval or min(base.recipe.training.eval_interval, max(1, steps // CURVE_POINTS))
    out = settings.out or Path("ablations") / base.recipe.name
    variants = grid(settings.swaps)
    values, own = tune_values(settings.tune, base)
    if settings.tune is not None and any(s.key == settings.tune.key for s in settings.swaps):
        raise GptfError(f"{settings.tune.key} is both swapped and tuned; tune another key, or only swap it")
    threads = base.recipe.training.threads
    jobs = settings.jobs or default_jobs(len(variants) * len(values) * settings.seeds, threads)
    if threads is None and jobs > 1:  # several runs at once share the cores
        threads = max(1, (os.cpu_count() or 1) // jobs)
    fixed, precision_note = grid_precision(settings, base, threads)
    runs, problems, labelled = [], [], []
    for variant in variants:
        variant_steps = (steps_by_variant or {}).get(variant.slug, steps)
        try:
            planned = [
                plan_run(settings, base, out, variant, seed, value, variant_steps, eval_interval, threads, fixed)
                for value in values
                for seed in range(settings.seeds)
            ]
        except RecipeError as exc:
            problems += [f"{variant.label}: {p}" for p in exc.problems]
            continue
        label = resolved_label(settings.swaps, planned[0].loaded.data)
        labelled.append(attrs.evolve(variant, label=label))
        runs += [attrs.evolve(r, variant=labelled[-1]) for r in planned]
    if problems:
        raise RecipeError(str(settings.recipe), problems)
    by_variant = {v.slug: (steps_by_variant or {}).get(v.slug, steps) for v in labelled}
    return Plan(
        settings,
        base,
        out,
        steps,
        eval_interval,
        labelled,
        runs,
        values,
        own,
        threads,
        jobs,
        by_variant,
        precision_note=precision_note,
    )


def grid_precision(settings: Settings, base: LoadedRecipe, threads: int | None) -> tuple[list[str], str | None]:
    """``training.precision: auto`` decided once, for every run of the grid.

    Each run deciding for itself would time its probe while other runs train beside it, and
    the variants could end up in different precisions: a difference the table would then
    blame on the swapped component. A swapped or tuned precision is left to each run."""
    training = base.recipe.training
    varied = [s.key for s in settings.swaps] + ([settings.tune.key] if settings.tune else [])
    if training.precision != "auto" or "training.precision" in varied:
        return [], None
    m = base.recipe.model
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)  # probe with the threads each run will have
    try:
        choice = _cached_precision(m.n_embd, m.seq_len, training.micro_batch)
    finally:
        torch.set_num_threads(before)
    return [f"training.precision={choice.precision}"], f"{choice.precision} for every run ({choice.reason})"


@functools.cache
def _cached_precision(n_embd: int, seq_len: int, micro_batch: int) -> PrecisionChoice:
    """Once per process: ``--budget seconds`` plans the grid twice, with the same answer."""
    return choose_precision("auto", torch.device("cpu"), n_embd=n_embd, seq_len=seq_len, batch=micro_batch)


def plan_run(
    settings: Settings,
    base: LoadedRecipe,
    out: Path,
    variant: Variant,
    seed: int,
    value: str | None,
    steps: int,
    eval_interval: int,
    threads: int | None,
    fixed: Sequence[str] = (),
) -> PlannedRun:
    """One run: the variant's overrides, the tuned value, the seed and the budget (``fixed``:
    settings decided once for the whole grid, before the variant's own)."""
    tuned, value_slug = [], ""
    if settings.tune is not None and value is not None:
        tuned = [f"{settings.tune.key}={value}"]
        value_slug = f"-{settings.tune.short}{re.sub(r'[^A-Za-z0-9_.+-]+', '_', value)}"
    run_dir = out / "runs" / f"{variant.slug}{value_slug}-seed{seed}"
    overrides = [
        *settings.overrides,
        *fixed,
        *variant.overrides,
        *tuned,
        f"training.seed={seed}",
        f"training.max_steps={steps}",
        "training.time_budget_s=null",  # the same steps for every variant, whatever their speed
        f"training.eval_interval={eval_interval}",
        f"output_dir={json.dumps(str(run_dir))}",  # JSON quotes are YAML quotes
        f"name={base.recipe.name}.{variant.slug}{value_slug}.seed{seed}",
    ]
    if threads is not None:
        overrides.append(f"training.threads={threads}")
    tokenizer_swaps = [s for s in settings.swaps if s.key.startswith("tokenizer.") and s.key != "tokenizer.path"]
    if tokenizer_swaps:  # each tokenizer choice trains and keeps its own file
        overrides.append(f"tokenizer.path={json.dumps(tokenizer_file(out, variant, tokenizer_swaps))}")
    loaded = load_recipe(settings.recipe, overrides)
    registry_for(loaded)  # every component exists and its parameters fit
    return PlannedRun(variant, seed, loaded, run_key(loaded), value)


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


# ------------------------------------------------------------------ an equal time budget


def equal_time_steps(settings: Settings, console: Console) -> tuple[dict[str, int], dict[str, float]]:
    """``--budget seconds``: each variant's steps, so all train as long as the first does in ``--steps``."""
    plan = make_plan(settings)
    prepare_tokenizers(plan.runs, console)
    first = {r.variant.slug: r for r in reversed(plan.runs)}  # each variant's first run (seed 0)
    seconds = {}
    for variant in plan.variants:
        seconds[variant.slug] = seconds_per_step(first[variant.slug].loaded)
        console.print(f"timing {variant.label}: {seconds[variant.slug]:.3f} s/step", highlight=False, markup=False)
    budget = plan.steps * seconds[plan.variants[0].slug]
    return {slug: max(1, round(budget / s)) for slug, s in seconds.items()}, seconds


# ------------------------------------------------------------------ running


def run_one(run: PlannedRun, on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one run as ``gptf run`` would (val answers scored at the end), without what no ablation reads
    (:data:`ABLATION_EXTRAS`) and with the data an earlier run of this process tokenised (:data:`SPLITS`);
    its log goes to ``train.log``."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / RUN_RECORD).unlink(missing_ok=True)
    record: dict[str, Any] = {
        "key": run.key,
        "variant": run.variant.label,
        "overrides": run.variant.overrides,
        "tune": run.tune,
        "seed": run.seed,
        "run_dir": str(run.run_dir),
    }
    with open(run.run_dir / "train.log", "w", encoding="utf-8") as log:
        console = Console(file=log, width=120, highlight=False, no_color=True)
        try:
            result = run_recipe(run.loaded, console, on_step=on_step, extras=ABLATION_EXTRAS, splits=SPLITS)
        except Interrupted:
            raise  # Ctrl+C stops the whole grid
        except TrainingStopped as exc:  # e.g. the loss diverged: a result, not a crash
            stability = {"stable": False, "summary": f"not finite: {exc.message.splitlines()[0]}", "events": []}
            return {**record, "status": "failed", "error": exc.message, "stability": stability}
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
        val_eval=info.get("val_eval"),
        stability=info.get("stability"),
        demo=info.get("demo", []),
        train_curve=curves.train,
        val_curve=curves.val,
    )
    write_json(run.run_dir / RUN_RECORD, record)
    return record


def run_ablation(settings: Settings, console: Console) -> dict[str, Any]:
    """Plan, train what is not done yet, then write and print the comparison."""
    started = time.perf_counter()
    steps_by_variant, step_seconds = None, {}
    if settings.budget == "seconds":
        steps_by_variant, step_seconds = equal_time_steps(settings, console)
    plan = attrs.evolve(make_plan(settings, steps_by_variant), step_seconds=step_seconds)
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
    if plan.jobs > 1 and len(todo) > 1:
        _train_parallel(plan, todo, records, console)
    else:
        _train_all(plan, todo, records, console)
    summary = summarise(plan, records, time.perf_counter() - started, trained=len(todo))
    write_outputs(plan, summary, console)
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
    b, s = plan.base, plan.settings
    console.rule(f"[bold]gptf ablate[/]  {b.recipe.name}")
    console.print(f"recipe chain: {' -> '.join(p.name for p in b.chain)}", highlight=False, markup=False)
    console.print(f"variants: {', '.join(v.label for v in plan.variants)}", highlight=False, markup=False)
    tuned = ""
    if s.tune is not None:
        tuned = f" x {len(plan.tune_values)} values of {s.tune.key} ({', '.join(map(str, plan.tune_values))})"
    budget = (
        f"{plan.steps} steps each"
        if s.budget == "steps"
        else "equal training time: "
        + ", ".join(f"{v.label} {plan.steps_by_variant[v.slug]} steps" for v in plan.variants)
    )
    console.print(
        f"{len(plan.runs)} runs = {len(plan.variants)} variants{tuned} x {s.seeds} seed(s) "
        f"(training.seed 0..{s.seeds - 1}), {budget}, validation every {plan.eval_interval} steps; "
        f"same data order and initial seed for every variant; {plan.jobs} at a time, "
        f"{plan.threads or 'default'} thread(s) each",
        highlight=False,
        markup=False,
    )
    if plan.precision_note:
        console.print(f"precision: {plan.precision_note}", highlight=False, markup=False)
    console.print(f"output: {plan.out}", highlight=False, markup=False)
    if skipped:
        console.print(
            f"{skipped} run(s) already finished with the same recipe and data: skipped", highlight=False, markup=False
        )


def _run_name(number: int, total: int, run: PlannedRun, plan: Plan) -> str:
    tuned = f" {plan.settings.tune.short}={run.tune}" if plan.settings.tune is not None else ""
    return f"[{number}/{total}] {run.variant.label}{tuned} seed {run.seed}"


def _done_line(name: str, record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"{name}: FAILED: {record['error']}"
    stability = (record.get("stability") or {}).get("summary", "")
    flag = "" if stability.startswith("stable") or not stability else f"; {stability}"
    return (
        f"{name}: done in {record['wall_s']:.1f}s, train loss {_num(record['final_train_loss'])}, "
        f"val loss {_num(record['final_val_loss'])}{flag}"
    )


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _progress(console: Console, live: bool) -> Progress:
    return Progress(
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


def _train_all(plan: Plan, todo: list[PlannedRun], records: dict[str, dict[str, Any]], console: Console) -> None:
    """One run after the other, with a live bar over every step of the grid."""
    if not todo:
        return
    live = console.is_terminal
    progress = _progress(console, live)
    steps = [r.loaded.recipe.training.max_steps for r in todo]
    task = progress.add_task("grid", total=sum(steps), loss="-")
    with progress:
        for number, run in enumerate(todo, start=1):
            name = _run_name(number, len(todo), run, plan)
            progress.update(task, description=name)
            if not live:
                console.print(f"{name}: training ({run.run_dir}/train.log)", highlight=False, markup=False)
            done_before = sum(steps[: number - 1])

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
            progress.update(task, completed=done_before + steps[number - 1])
            (progress.console if live else console).print(_done_line(name, record), highlight=False, markup=False)


def _train_parallel(plan: Plan, todo: list[PlannedRun], records: dict[str, dict[str, Any]], console: Console) -> None:
    """``--jobs N``: N runs at once, each in a fresh process (spawned: no state shared with this one)."""
    context = multiprocessing.get_context("spawn")
    done = 0
    console.print(f"training {len(todo)} runs, {plan.jobs} at a time (each run's log: <run>/train.log)")
    with concurrent.futures.ProcessPoolExecutor(max_workers=plan.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_one, run): number for number, run in enumerate(todo, start=1)}
        try:
            for future in concurrent.futures.as_completed(futures):
                number = futures[future]  # the run's place in the plan, whatever order they finish in
                run, record = todo[number - 1], future.result()
                records[run.key] = record
                done += 1
                line = _done_line(_run_name(number, len(todo), run, plan), record)
                console.print(line, highlight=False, markup=False)
        except (KeyboardInterrupt, Interrupted) as exc:
            for future in futures:
                future.cancel()
            raise Interrupted(
                f"ablation interrupted after {done} of {len(todo)} runs",
                hint="run the same gptf ablate command again: finished runs are skipped",
            ) from exc


def check_swaps_given(swaps: Sequence[str]) -> list[Swap]:
    """Parse every ``--swap``; the same key twice is a mistake."""
    parsed = [parse_swap(s) for s in swaps]
    keys = [s.key for s in parsed]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise GptfError(f"--swap {repeated[0]} is given twice; list all its values in one --swap, separated by commas")
    return parsed


def check_budget(budget: str) -> str:
    if budget not in BUDGETS:
        raise GptfError(f"--budget {budget}: choose 'steps' (equal steps) or 'seconds' (equal training time)")
    return budget
