"""``gptf run``, stage by stage, and opening a finished run again (``gptf generate``).

    load   check the recipe, resume or not, tokenizer, data      -> RunInputs
    build  the model from its components (fresh or --init-from)  -> GPT
    train  the training loop with checkpoints and signals        -> TrainState
           (under torchrun: every process trains, see gptf.train.distributed)
    finish save weights, recipe, tokenizer, int8 weights         -> run folder
    report demo answers, val scores, run.json, summary, loss.png -> RunResult

Each stage is one function below, in that order; :func:`run_recipe` calls them. Under torchrun
every process runs load, build and train; rank 0 alone goes on to finish and report.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console

from gptf import __version__
from gptf.build.components import (
    build_answer_filter,
    build_callbacks,
    build_constraints,
    build_model,
    build_optimizer,
    build_quantizer,
    build_scheduler,
    component_slots,
    count_parameters,
    new_tokenizer,
    open_registry,
)
from gptf.build.describe import banner
from gptf.build.devices import resolve_device
from gptf.build.plugins import is_plugin_file, untrusted_plugins
from gptf.build.registry import Registry
from gptf.build.speed import CompiledDecodeStep
from gptf.build.validate import demo_prompt_problems, validate_for_run
from gptf.data import TokenizedSplit, augment_prompts, parse_jsonl, read_jsonl, tokenize_split, training_texts
from gptf.decoding.taught_memory import TaughtMemory
from gptf.decoding.taught_questions import QUESTION_SIMILARITY, TaughtQuestions
from gptf.errors import CheckpointError, GptfError, PluginError, RecipeError, RunFolderBusy
from gptf.evaluate import Calibration, calibrate_on_val, evaluate_after_training
from gptf.generate import DraftBank, Generation, Generator, SamplingSettings
from gptf.interfaces import TAUGHT_MEASURES, TAUGHT_WEIGHT, Tokenizer
from gptf.model import GPT
from gptf.plots import report_loss_plot
from gptf.recipe import ComponentSpec, LoadedRecipe, Recipe, read_recipe_file, recipe_from_dict, recipe_to_dict
from gptf.recipe.limits import sampling_problems
from gptf.recipe.schema import MemoryConfig
from gptf.train import time_budget
from gptf.train.answer_weights import loss_weighting
from gptf.train.checkpoint import Checkpoint
from gptf.train.distributed import World, oversubscription_note
from gptf.train.fingerprints import (
    check_components_present,
    check_plugin_files,
    check_tokenizer,
    check_weight_shapes,
    read_run_record,
    run_file_fingerprints,
    verify_run_files,
)
from gptf.train.init_from import adopt_tokenizer, load_initial_weights
from gptf.train.lock import RunLock, lock_holder
from gptf.train.progress import TrainingProgress
from gptf.train.run_files import (
    RunFiles,
    append_jsonl,
    atomic_write,
    file_sha256,
    load_tensors,
    load_weights,
    save_tensors,
    save_weights,
    write_json,
    write_yaml,
)
from gptf.train.session import TrainingSession, open_resume
from gptf.train.trainer import Trainer, TrainState


@attrs.define
class RunInputs:
    """Everything the load stage found: what the later stages work from."""

    loaded: LoadedRecipe
    registry: Registry
    files: RunFiles
    tokenizer: Tokenizer
    train: TokenizedSplit
    val: TokenizedSplit | None
    checkpoint: Checkpoint | None  # the checkpoint to resume from, if any
    init_from: Path | None
    lock: RunLock  # held on the run folder from the load stage to the end of the run
    precision: dict[str, Any] = attrs.field(factory=dict)  # what training ran in and why (run.json)
    time_budget: dict[str, Any] = attrs.field(factory=dict)  # the steps training.time_budget_s chose (run.json)

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe


@attrs.define
class RunResult:
    run_dir: Path
    seconds: float
    train_loss: float | None
    val_loss: float | None
    answers: list[Generation]
    stability: dict[str, Any] = attrs.field(factory=dict)  # gptf.train.stability: spikes, divergence, NaN
    val_eval: dict[str, Any] | None = None  # greedy answers to data.val, scored (gptf.evaluate)


@attrs.frozen
class Extras:
    """What a run makes that nothing downstream of ``gptf ablate`` reads: on for ``gptf run``; an
    ablation run turns them off (:data:`gptf.tools.ablate.ABLATION_EXTRAS`). The training, the final
    val loss, the weights and ``run.json`` do not depend on them; the val answers only on ``memory``."""

    checkpoints: bool = True  # a resumable checkpoint every training.save_interval steps
    loss_plot: bool = True  # loss.png beside metrics.jsonl
    # answer_filter threshold: auto, calibrated on val after training; without it the filter stays
    # off, so an ablation scores every variant's own answers (not what its filter would hide)
    calibrate_filter: bool = True
    # generation.memory for the val answers at the end; off, an ablation compares what each variant's
    # model learned, not what the memory of the taught answers adds to every variant alike
    memory: bool = True


class SplitCache:
    """Tokenised data splits kept for the next run in this process that tokenises the same file with
    the same tokenizer, ``model.seq_len`` and ``data`` settings (``gptf ablate``: a worker process
    trains run after run on the same data). Keyed by the contents of the data and tokenizer files, so
    a changed file is tokenised again; the newest ``size`` splits are kept."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._splits: dict[str, TokenizedSplit] = {}
        self.hits = 0

    def get(self, key: str, make: Callable[[], TokenizedSplit]) -> TokenizedSplit:
        split = self._splits.pop(key, None)
        if split is None:
            split = make()
        else:
            self.hits += 1
        self._splits[key] = split  # the newest last
        while len(self._splits) > self.size:
            del self._splits[next(iter(self._splits))]
        return split

    @staticmethod
    def key(recipe: Recipe, label: str) -> str:
        """What a tokenised split depends on (the samples' order and augmentation included)."""
        data, tokenizer = recipe.data, recipe.tokenizer
        augmented = label == "train" and data.augment_copies > 0
        parts = {
            "split": label,
            "data": file_sha256(Path(getattr(data, label))),
            "tokenizer": [tokenizer.type.name, tokenizer.type.params, file_sha256(Path(tokenizer.path))],
            "seq_len": recipe.model.seq_len,
            "truncate": data.truncate,
            "augment": [data.augment_copies, recipe.training.seed] if augmented else None,
        }
        return json.dumps(parts, sort_keys=True, default=str)


def run_recipe(
    loaded: LoadedRecipe,
    console: Console,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    *,
    init_from: Path | None = None,
    device: str = "cpu",
    final_eval: bool = True,
    resume: Path | None = None,
    force: bool = False,
    world: World | None = None,
    extras: Extras = Extras(),
    splits: SplitCache | None = None,
) -> RunResult:
    """Everything ``gptf run`` does. ``on_step`` also gets every step's metrics (``gptf ablate``).
    ``init_from``: start from that run's weights (:mod:`gptf.train.init_from`); ``final_eval``: end
    with greedy answers to the val prompts, scored (:mod:`gptf.evaluate`). ``resume``: continue the
    run in that directory from its last checkpoint (:mod:`gptf.train.session`); ``force``: even if
    the recipe or data changed since. ``world``: this process's place in a torchrun
    (:mod:`gptf.train.distributed`); by default one process. ``extras``: the periodic checkpoints
    and the loss picture, which ``gptf ablate`` does without. ``splits``: reuse the data an earlier run
    of this process tokenised the same way (:class:`SplitCache`)."""
    started = time.perf_counter()
    world = world or World()
    world.check_batch(loaded.recipe.training.batch_size)
    if resume is not None:  # a run whose time budget chose its steps continues with those steps
        loaded = time_budget.steps_chosen_before(loaded, Path(resume))
    inputs = load_stage(loaded, console, init_from=init_from, resume=resume, force=force, world=world, splits=splits)
    try:  # inputs.lock: this process alone writes the run folder until the end
        model = build_stage(inputs, console, device, world)
        state, session = train_stage(inputs, model, console, on_step, world, checkpoints=extras.checkpoints)
        if not world.is_main:  # rank 0 writes the run folder and reports; this process is done
            return RunResult(inputs.files.root, time.perf_counter() - started, state.train_loss, None, [])
        model = model.cpu()  # saving, int8 quantization and the checks below run on the CPU
        stability = session.trainer.stability.report()
        try:
            quantized_note = finish_stage(inputs, model)
            session.publish_metrics()  # the saved weights' metrics replace an older run's
            result = report_stage(
                inputs,
                model,
                state,
                console,
                final_eval=final_eval,
                stability=stability,
                calibrate_filter=extras.calibrate_filter,
                memory=extras.memory,
            )
        except OSError as exc:  # disk full...: the training is kept as a resumable checkpoint
            session.rescue(exc, "saving the finished run")
        session.close()  # finished and saved: the resumable checkpoints are no longer needed
        result.seconds = time.perf_counter() - started
        print_summary(inputs, state, result, quantized_note, console, loss_plot=extras.loss_plot)
    finally:
        inputs.lock.release()
    return result


# ------------------------------------------------------------------------------ load


def load_stage(
    loaded: LoadedRecipe,
    console: Console,
    *,
    init_from: Path | None,
    resume: Path | None,
    force: bool,
    world: World | None = None,
    splits: SplitCache | None = None,
) -> RunInputs:
    """Check everything, decide where the run goes, get the tokenizer and tokenise the data (or take
    it from ``splits``). Under torchrun, rank 0 writes the tokenizer file first and the others then load it."""
    world = world or World()
    recipe = loaded.recipe
    registry = validate_for_run(loaded, console)
    run_dir = Path(resume) if resume is not None else recipe.run_dir
    lock = RunLock(run_dir)
    if world.is_main and (resume is None or run_dir.is_dir()):  # (a missing folder to resume: open_resume says so)
        lock.acquire(console)  # before anything is read from or written to the folder; rank 0 alone writes
    try:
        checkpoint = None
        if resume is not None:  # refuse early if the recipe or data changed since the checkpoint
            checkpoint = open_resume(
                run_dir, loaded, saved_recipe(loaded), force=force, console=console, world_size=world.size
            )
        train_samples = read_jsonl(recipe.data.train)
        with world.main_first():
            if init_from is not None:
                adopt_tokenizer(recipe, registry, Path(init_from), console)
            tokenizer = prepare_tokenizer(recipe, registry, train_samples, console, reuse=not world.is_main)
        too_long = demo_prompt_problems(recipe, tokenizer)  # answered at the end: refused now, not after training
        if too_long:
            raise RecipeError(str(loaded.chain[0]), too_long)
        if recipe.data.augment_copies:  # after the tokenizer: it learns from the real questions only
            train_samples = augment_prompts(train_samples, recipe.data.augment_copies, recipe.training.seed)
        train = tokenize_data(recipe, "train", lambda: train_samples, tokenizer, console, splits)
        val = None
        if recipe.data.val:
            val = tokenize_data(recipe, "val", lambda: read_jsonl(recipe.data.val), tokenizer, console, splits)
    except BaseException:
        lock.release()
        raise
    return RunInputs(loaded, registry, RunFiles(run_dir), tokenizer, train, val, checkpoint, init_from, lock)


def prepare_tokenizer(
    recipe: Recipe, registry: Registry, train_samples: list, console: Console, *, reuse: bool = False
) -> Tokenizer:
    """Load ``tokenizer.path`` if it exists (and ``rebuild`` is off, or ``reuse``: the file
    another process of this run has just written), else train and save it."""
    cfg = recipe.tokenizer
    tokenizer = new_tokenizer(recipe, registry)
    path = Path(cfg.path)
    if path.is_file() and (reuse or not cfg.rebuild):
        try:
            tokenizer.load(path)
        except Exception as exc:
            raise GptfError(
                f"cannot load tokenizer {path}: {exc}", hint="set tokenizer.rebuild=true to retrain it"
            ) from exc
        if tokenizer.vocab_size != cfg.vocab_size:
            raise GptfError(
                f"tokenizer {path} has {tokenizer.vocab_size} tokens but tokenizer.vocab_size is {cfg.vocab_size}",
                hint="set tokenizer.rebuild=true to retrain it, or point tokenizer.path elsewhere",
            )
        console.print(f"tokenizer: loaded {path} ({tokenizer.vocab_size} tokens)", highlight=False)
        return tokenizer
    started = time.perf_counter()
    tokenizer.train(training_texts(train_samples))
    atomic_write(path, lambda tmp: tokenizer.save(tmp))
    console.print(
        f"tokenizer: trained {cfg.type.name} on {len(train_samples)} samples in "
        f"{time.perf_counter() - started:.1f}s -> {path} ({tokenizer.vocab_size} tokens)",
        highlight=False,
    )
    if tokenizer.vocab_size != cfg.vocab_size:
        console.print(f"[yellow]note: the data only supports {tokenizer.vocab_size} tokens, not {cfg.vocab_size}[/]")
    return tokenizer


def tokenize_data(
    recipe: Recipe,
    label: str,
    samples: Callable[[], list],
    tokenizer: Tokenizer,
    console: Console,
    splits: SplitCache | None = None,
) -> TokenizedSplit:
    """Tokenise one split up front (or take it from ``splits``) and say what it holds."""
    path = getattr(recipe.data, label) or ""

    def tokenise() -> TokenizedSplit:
        return tokenize_split(samples(), tokenizer, recipe.model.seq_len, truncate=recipe.data.truncate, source=path)

    split = tokenise() if splits is None else splits.get(SplitCache.key(recipe, label), tokenise)
    report_split(console, label, path, split)
    return split


def report_split(console: Console, label: str, path: str, split: TokenizedSplit) -> None:
    lengths = split.lengths
    note = ""
    if split.truncated:
        note += f", {split.truncated} truncated to seq_len"
    if split.dropped:
        note += f", {split.dropped} dropped (prompt fills seq_len)"
    console.print(
        f"data {label}: {path}: {len(split)} samples, {split.answer_tokens:,} answer tokens, "
        f"length mean {sum(lengths) / len(lengths):.1f} max {max(lengths)}{note}",
        highlight=False,
    )


# ----------------------------------------------------------------------------- build


def build_stage(inputs: RunInputs, console: Console, device: str, world: World | None = None) -> GPT:
    """Build the model from its components (seeded), optionally from an earlier run's weights."""
    world = world or World()
    recipe, target = inputs.recipe, world.place(resolve_device(device))
    threads = set_threads(recipe.training.threads)
    torch.manual_seed(recipe.training.seed)
    model = build_model(recipe, inputs.registry, inputs.tokenizer.vocab_size)
    if inputs.init_from is not None:
        load_initial_weights(model, recipe, Path(inputs.init_from))
        console.print(f"weights: starting from {inputs.init_from} (fresh optimizer and schedule)", highlight=False)
    model = model.to(target)
    banner(inputs.loaded, inputs.registry, model, console)
    t = recipe.training
    console.print(
        f"training: {t.max_steps} steps"
        + (f" or as many as fit {t.time_budget_s:g} s" if t.time_budget_s is not None and not inputs.checkpoint else "")
        + f", batch {t.batch_size} = {t.batch_size // t.micro_batch} x micro-batch "
        f"{t.micro_batch}, lr {t.lr:g}, {t.precision}, {threads} threads"
        + (", torch.compile" if t.compile else "")
        + (", activation checkpointing" if t.activation_checkpointing else ""),
        highlight=False,
    )
    weighting = loss_weighting(t)
    if weighting:
        console.print(
            f"loss: {weighting} (the train loss is that weighted mean; the val loss weighs every answer token alike)",
            highlight=False,
        )
    if world.distributed:
        console.print(
            f"distributed: {world.size} processes ({world.backend}, {target.type}), each {t.batch_size // world.size} "
            f"of the {t.batch_size} samples of every step; rank 0 prints, evaluates and saves",
            highlight=False,
        )
    note = oversubscription_note(world, threads) if target.type == "cpu" else None
    if note:
        console.print(f"[yellow]warning: {note}[/]", highlight=False)
    return model


def set_threads(threads: int | None) -> int:
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# ----------------------------------------------------------------------------- train


def train_stage(
    inputs: RunInputs,
    model: GPT,
    console: Console,
    on_step: Callable[[dict[str, Any]], None] | None,
    world: World | None = None,
    *,
    checkpoints: bool = True,
) -> tuple[TrainState, TrainingSession]:
    """The training loop, inside a session that saves checkpoints (every ``training.save_interval``
    steps unless ``checkpoints`` is off; on Ctrl+C always) and handles Ctrl+C."""
    recipe, files, world = inputs.recipe, inputs.files, world or World()
    if world.is_main:
        files.root.mkdir(parents=True, exist_ok=True)
        files.metrics_in_progress.unlink(missing_ok=True)  # (metrics.jsonl: an older finished run's, kept until saved)
    log = (lambda record: append_jsonl(files.metrics_in_progress, record)) if world.is_main else None
    trainer = make_trainer(inputs, model, log=log, world=world)
    choice = trainer.precision
    inputs.precision.update(choice.as_record())
    console.print(f"precision: {choice.precision} ({choice.reason})", highlight=False)
    console.print(f"memory: {trainer.allocator}", highlight=False)
    if trainer.side_by_side.workers > 1:
        console.print(
            f"micro-batches: {trainer.side_by_side.workers} at a time, one thread each (training.side_by_side)",
            highlight=False,
        )
    keeps_budget = fit_time_budget(inputs, trainer, console, world)
    session = TrainingSession(
        trainer=trainer,
        loaded=inputs.loaded,
        files=files,
        recipe_data=saved_recipe(inputs.loaded),
        console=console,
        resume_from=inputs.checkpoint,
        periodic=checkpoints,
    )

    def report(metrics: dict[str, Any]) -> None:
        progress.update(metrics, recipe.training.log_interval)
        if on_step is not None:
            on_step(metrics)

    def replan(steps: int, reason: str) -> None:
        """Fewer steps to keep to the time budget: the schedule, the recipe the run records, the progress."""
        train_for(inputs, trainer, steps)
        session.loaded, session.recipe_data = inputs.loaded, saved_recipe(inputs.loaded)
        progress.set_total(steps)
        inputs.time_budget.setdefault("replanned", []).append(
            {"at_step": trainer.state.step, "steps": steps, "reason": reason}
        )
        console.print(f"steps: {reason}", highlight=False)

    with TrainingProgress(console, trainer.config.max_steps, start_step=trainer.state.step) as progress, session:
        if keeps_budget:
            trainer.callbacks.append(time_budget.KeepToBudget(recipe.training.time_budget_s, replan))
        state = trainer.fit(on_step=session.after_step(report))
    session.finish()  # stopped by Ctrl+C/SIGTERM: saves a resumable checkpoint and says how to continue
    return state, session


def fit_time_budget(inputs: RunInputs, trainer: Trainer, console: Console, world: World) -> bool:
    """``training.time_budget_s``: time a few steps here and train as many of ``max_steps`` as fit
    (:mod:`gptf.train.time_budget`); the run's recipe then records the steps chosen. True where the
    budget applies (the run then keeps to it: :class:`~gptf.train.time_budget.KeepToBudget`)."""
    training = inputs.recipe.training
    if training.time_budget_s is None or inputs.checkpoint is not None:  # resumed: chosen when it started
        return False
    if training.max_steps <= time_budget.GRANULARITY:  # it would train them all anyway: nothing to time
        return False
    if world.distributed:
        console.print(
            f"[yellow]note: training.time_budget_s is not applied under torchrun: all {training.max_steps} steps[/]"
        )
        return False
    mean_tokens = training.batch_size * statistics.fmean(inputs.train.lengths)
    budget = time_budget.plan_steps(trainer, training.time_budget_s, mean_tokens)
    inputs.time_budget.update(budget.as_record())
    if budget.steps != training.max_steps:
        train_for(inputs, trainer, budget.steps)
    console.print(f"steps: {budget.reason}", highlight=False)
    return True


def train_for(inputs: RunInputs, trainer: Trainer, steps: int) -> None:
    """Train ``steps`` in all (the time budget's choice): the recipe the run records says so, and the
    trainer gets it with a schedule laid out for them (warm-up and decay end at the new last step)."""
    inputs.loaded = time_budget.with_max_steps(inputs.loaded, steps)
    trainer.config = inputs.recipe.training
    trainer.schedule = build_scheduler(inputs.recipe, inputs.registry)


def make_trainer(
    inputs: RunInputs,
    model: GPT,
    log: Callable[[dict[str, Any]], None] | None = None,
    world: World | None = None,
) -> Trainer:
    """The trainer for this run's model, data and recipe (also used to time a few steps)."""
    recipe, registry = inputs.recipe, inputs.registry
    return Trainer(
        config=recipe.training,
        model=model,
        train=inputs.train,
        val=inputs.val,
        pad_id=inputs.tokenizer.pad_id,
        optimizer=build_optimizer(recipe, registry, model),
        schedule=build_scheduler(recipe, registry),
        callbacks=build_callbacks(recipe, registry),
        log=log,
        world=world,
    )


def seconds_per_step(loaded: LoadedRecipe, steps: int = 8, skip: int = 2) -> float:
    """Time ``steps`` optimizer steps of a fresh model (the first ``skip`` not counted: warm-up).
    The same seed means the same batches for every recipe, so the times compare fairly
    (``gptf ablate --budget seconds``). Nothing is written."""
    quiet = Console(quiet=True)
    inputs = load_stage(loaded, quiet, init_from=None, resume=None, force=False)
    model = build_stage(inputs, quiet, "cpu")
    trainer = make_trainer(inputs, model)
    for _ in range(skip):
        trainer.train_step()
    started = time.perf_counter()
    for _ in range(steps - skip):
        trainer.train_step()
    return (time.perf_counter() - started) / max(1, steps - skip)


# ---------------------------------------------------------------------------- finish


def finish_stage(inputs: RunInputs, model: GPT) -> str:
    """Write the run folder: resolved recipe, tokenizer, fp32 weights and quantized weights."""
    recipe, files = inputs.recipe, inputs.files
    write_yaml(files.recipe, saved_recipe(inputs.loaded))
    atomic_write(files.tokenizer, lambda tmp: inputs.tokenizer.save(tmp))
    save_weights(model, files.weights)
    quantizer = build_quantizer(recipe, inputs.registry)
    if quantizer is None:
        files.quantized.unlink(missing_ok=True)
        return "none (quantizer: none)"
    save_tensors(quantizer.state_tensors(quantizer.quantize(model)), files.quantized)
    size_fp32, size_int8 = files.weights.stat().st_size, files.quantized.stat().st_size
    return f"{files.quantized} ({size_int8 / 1e6:.1f} MB vs {size_fp32 / 1e6:.1f} MB fp32)"


def saved_recipe(loaded: LoadedRecipe) -> dict[str, Any]:
    """The resolved recipe, with plugin files made absolute so the run can be reloaded."""
    data = recipe_to_dict(loaded.recipe)
    data["plugins"] = [str((loaded.base_dir / p).resolve()) if is_plugin_file(p) else p for p in loaded.recipe.plugins]
    return data


# ---------------------------------------------------------------------------- report


def report_stage(
    inputs: RunInputs,
    model: GPT,
    state: TrainState,
    console: Console,
    *,
    final_eval: bool,
    stability: dict[str, Any],
    calibrate_filter: bool = True,
    memory: bool = True,
) -> RunResult:
    """Demo answers, scores on the val questions, and ``run.json`` (what this run was made with)."""
    recipe, registry, tokenizer = inputs.recipe, inputs.registry, inputs.tokenizer
    constraints = build_constraints(recipe.generation.constraints, registry, tokenizer)
    calibration = None
    answered: dict = {}  # the val answers of the calibration, reviewed again (not recomputed) by the final eval
    g = recipe.generation
    choice = beam_choice(g.beam_choice, g.beams)
    calibrating = calibrate_filter and final_eval and wants_calibration(g.answer_filter) and recipe.data.val
    # the training questions, read once: beam search may choose with them, the calibration compares the
    # filter's taught_question measures (only where the file can be read), the chosen filter may use them
    memory_config = g.memory if memory else None  # (off: gptf ablate)
    required = choice == "taught_question" or memory_config is not None  # cannot answer without them
    taught = taught_questions(recipe, required=required) if calibrating or required else None
    memory_vote = taught_memory(memory_config, taught, tokenizer)
    if calibrating:
        unfiltered = Generator(
            model,
            tokenizer,
            constraints,
            answered=answered,
            beams=g.beams,
            taught=taught,
            beam_choice=choice,
            memory=memory_vote,
        )
        calibration = calibrate_filter_on_val(inputs, unfiltered, console)
        recipe = read_saved_recipe(inputs)  # now with the chosen filter
    answer_filter = build_answer_filter(recipe.generation.answer_filter, registry, tokenizer)
    if needs_taught(answer_filter) and taught is None:
        taught = taught_questions(recipe, required=True)
    generator = Generator(
        model,
        tokenizer,
        constraints,
        answer_filter=answer_filter,
        compile_decode=recipe.generation.compile,
        draft=recipe.generation.draft,
        draft_bank=draft_bank(recipe, tokenizer),
        answered=answered,
        beams=recipe.generation.beams,
        taught=taught,
        beam_choice=choice,
        memory=memory_vote,
    )
    answers = demo_answers(recipe, generator, console)
    record = run_record(inputs, model, state, answers)
    record["stability"] = stability
    if calibration is not None:
        record["answer_filter"] = calibration.summary()
    if final_eval:
        scores = evaluate_after_training(generator, recipe, console, inputs.files.root / "eval.json")
        record["val_eval"] = scores.summary() if scores else None
    if inputs.init_from is not None:
        record["init_from"] = str(inputs.init_from)
    write_json(inputs.files.info, record)
    return RunResult(
        inputs.files.root, 0.0, state.train_loss, state.val_loss, answers, stability, record.get("val_eval")
    )


def wants_calibration(spec: ComponentSpec) -> bool:
    """``generation.answer_filter: {name: confidence, threshold: auto}``: choose it at the end of the run."""
    return spec.params.get("threshold") == "auto"


def calibrate_filter_on_val(inputs: RunInputs, generator: Generator, console: Console) -> Calibration:
    """``threshold: auto``: calibrate the answer filter on the val questions (:func:`calibrate_on_val`,
    with ``generator``: the run's model and constraints, no filter) and write the choice into the run's
    ``recipe.yaml`` (a number, or ``none`` if no threshold helps), so ``gptf generate/chat/serve/eval``
    use it; the curve goes to ``calibration.json``."""
    recipe, files = inputs.recipe, inputs.files
    with console.status("calibrating the answer filter on val...", spinner="dots"):
        result = calibrate_on_val(generator, recipe, recipe.generation.max_new_tokens)
    write_json(files.root / "calibration.json", result.to_json())
    data = read_recipe_file(files.recipe)
    data.setdefault("generation", {})["answer_filter"] = result.filter_spec
    write_yaml(files.recipe, data)
    console.print(f"answer filter   {result.describe()}", highlight=False)
    return result


def read_saved_recipe(inputs: RunInputs) -> Recipe:
    """The recipe as written into the run folder (after the filter was calibrated)."""
    return recipe_from_dict(read_recipe_file(inputs.files.recipe), str(inputs.files.recipe))


def demo_answers(recipe: Recipe, generator: Generator, console: Console) -> list[Generation]:
    """Answer the recipe's ``demo_prompts`` with its own generation settings."""
    if not recipe.demo_prompts:
        return []
    settings = sampling_settings(recipe)
    console.rule("demo answers")
    if generator.beams > 1 and settings.temperature == 0:
        console.print(
            f"[dim]greedy answers by beam search: the most likely of {generator.beams} candidate answers "
            + (
                "whose taught questions look most like the question (generation.beam_choice) "
                if generator.beam_choice == "taught_question"
                else ""
            )
            + "(generation.beams; these and the scores below)[/]"
        )
    if generator.memory is not None:
        console.print(
            "[dim]with a memory of the taught answers: those of the most similar taught questions vote with "
            f"{generator.memory.weight:.0%} on every next token (generation.memory; gptf eval --no-memory: "
            "the model alone)[/]"
        )
    answers = []
    for prompt in recipe.demo_prompts:
        answer = generator.generate(prompt, settings, seed=recipe.training.seed)
        answers.append(answer)
        console.print(f"[bold]用户:[/] {prompt}\n[bold]回答:[/] {answer.text}")
    return answers


def print_summary(
    inputs: RunInputs, state: TrainState, result: RunResult, quantized: str, console: Console, *, loss_plot: bool = True
) -> None:
    """Where everything is, and the command to ask the model; then the loss picture (unless ``loss_plot`` is off)."""
    recipe, files = inputs.recipe, inputs.files
    example = (recipe.demo_prompts or ["什么是注意力机制？"])[0]
    console.rule("summary")
    console.print(
        f"steps {state.step}  train time {state.elapsed_s:.1f}s  total {result.seconds:.1f}s\n"
        f"final train loss {_fmt(state.train_loss)}  final val loss {_fmt(state.val_loss)}\n"
        f"stability       {result.stability.get('summary', '-')}\n"
        f"run directory   {files.root}\n"
        f"weights         {files.weights}\n"
        f"quantized       {quantized}\n"
        f"metrics         {files.metrics}\n"
        f'ask it:         gptf generate --ckpt {files.root} --prompt "{example}"',
        highlight=False,
    )
    if result.stability.get("hint"):
        console.print(f"hint: {result.stability['hint']}", style="yellow", highlight=False, markup=False)
    if loss_plot:
        weighting = loss_weighting(recipe.training)
        label = f"train loss ({weighting})" if weighting else "train loss"
        report_loss_plot(files.metrics, console, title=recipe.name, train_label=label)  # loss.png beside metrics.jsonl
    else:
        console.print("loss curve      not drawn for this run (the numbers are in metrics.jsonl)", highlight=False)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run_record(inputs: RunInputs, model: GPT, state: TrainState, answers: list[Generation]) -> dict[str, Any]:
    """What ``run.json`` records: versions, sizes, losses, and the fingerprints checked on load."""
    loaded, registry, tokenizer, recipe = inputs.loaded, inputs.registry, inputs.tokenizer, inputs.recipe
    train, val = inputs.train, inputs.val
    data_files = [p for p in (recipe.data.train, recipe.data.val) if p]
    return {
        "gptf_version": __version__,
        "torch_version": torch.__version__,
        "recipe_chain": [str(p) for p in loaded.chain],
        "parameters": count_parameters(model),
        "steps": state.step,
        "train_seconds": round(state.elapsed_s, 2),
        "final_train_loss": state.train_loss,
        "final_val_loss": state.val_loss,
        "best_val_loss": state.best_val_loss,
        "tokens_seen": state.tokens_seen,
        "samples": {"train": len(train), "val": len(val) if val else 0, "truncated": train.truncated},
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "sha256": file_sha256(inputs.files.tokenizer)},
        "data": {p: file_sha256(Path(p)) for p in data_files},
        "plugins": [
            {"name": i.name, "origin": i.origin, "location": i.location, "version": i.version}
            for i in registry.plugins
            if i.ok
        ],
        "components": {s.key: registry.components[s.kind][s.spec.name].plugin for s in component_slots(recipe)},
        "demo": [{"prompt": a.prompt, "answer": a.text} for a in answers],
        "precision": inputs.precision or None,  # training.precision as it ran, and why (auto)
        "time_budget": inputs.time_budget or None,  # the steps training.time_budget_s chose here, and why
        "files": run_file_fingerprints(inputs.files),  # checked on load (gptf.train.fingerprints)
    }


# ------------------------------------------------------------------ opening a run again


def sampling_settings(recipe: Recipe, **overrides: Any) -> SamplingSettings:
    """The recipe's sampling settings with the command line's ``overrides`` (checked) on top."""
    g = recipe.generation
    values = {"max_new_tokens": g.max_new_tokens, "temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p}
    given = {k: v for k, v in overrides.items() if v is not None}
    check_sampling_options(given, seq_len=recipe.model.seq_len)
    values.update(given)
    return SamplingSettings(**values)


def check_sampling_options(values: dict[str, Any], seq_len: int | None = None) -> None:
    """Sampling options from the command line (``--temperature``, ``--seed``...): one error
    naming every bad one, by the rules all of gptf shares (:mod:`gptf.recipe.limits`)."""
    problems = sampling_problems(values, seq_len=seq_len)
    if problems:
        listed = "; ".join(f"--{key.replace('_', '-')}: {problem}" for key, problem in problems.items())
        raise GptfError(listed)


@attrs.define
class LoadedRun:
    """A finished run, rebuilt from its directory."""

    files: RunFiles
    recipe: Recipe
    registry: Registry
    tokenizer: Tokenizer
    model: torch.nn.Module
    quantized: bool
    info: dict[str, Any]
    _draft_bank: DraftBank | None = attrs.field(default=None, init=False, repr=False)
    _taught: TaughtQuestions | None = attrs.field(default=None, init=False, repr=False)
    _compiled_step: CompiledDecodeStep | None = attrs.field(default=None, init=False, repr=False)
    _training_file: Path | None = attrs.field(default=None, init=False, repr=False)
    _memory: TaughtMemory | None = attrs.field(default=None, init=False, repr=False)

    def stale_calibration(self) -> str | None:
        """A warning where the recipe's answer filter measures with the taught questions and its
        threshold comes from a calibration made while that measure was computed otherwise: questions
        compared in another way (:data:`gptf.decoding.taught_questions.QUESTION_SIMILARITY`), or, for
        ``min_logprob_taught``, another weight of ``taught_question`` (:data:`gptf.interfaces.TAUGHT_WEIGHT`).
        The same threshold then declines other answers than the ones it was chosen for. None where nothing
        is known to be off."""
        spec = self.recipe.generation.answer_filter
        measure = spec.params.get("measure")
        if measure not in TAUGHT_MEASURES:
            return None
        path = self.files.root / "calibration.json"
        try:
            calibration = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # no calibration (a threshold set by hand), or not one we can read
        if not isinstance(calibration, dict):
            return None
        chosen = calibration.get("answer_filter")
        if not isinstance(chosen, dict) or chosen.get("threshold") != spec.params.get("threshold"):
            return None  # the recipe's threshold is not this calibration's
        changes = []
        if calibration.get("question_similarity") != QUESTION_SIMILARITY:
            changes.append(
                f"taught_question compared questions by {calibration.get('question_similarity') or 'plain char F1'}; "
                f"gptf now compares them by {QUESTION_SIMILARITY}"
            )
        weight = calibration.get("taught_weight", 8.0)  # (before it was recorded, the weight was 8)
        if measure == "min_logprob_taught" and weight != TAUGHT_WEIGHT:
            changes.append(f"min_logprob_taught added {weight:g} x taught_question; it now adds {TAUGHT_WEIGHT:g} x")
        if not changes:
            return None
        return (
            f"the answer filter's threshold ({measure} below {spec.params.get('threshold')}) was calibrated ({path}) "
            f"while {' and '.join(changes)}, so it declines other answers than it was chosen for. Calibrate again: "
            f"gptf eval --ckpt {self.files.root} --calibrate --apply"
        )

    def generator(
        self,
        *,
        repetition_penalty: float | None = None,
        stops: list[str] | None = None,
        use_cache: bool = True,
        recipe_constraints: bool = True,
        answer_filter: bool = True,
        draft: bool | None = None,
        beams: int | None = None,
        taught: bool | None = None,
        compile: bool | None = None,
        memory: bool = True,
    ) -> Generator:
        """The run's generator. ``recipe_constraints=False``: ignore the recipe's
        ``generation.constraints`` and ``generation.memory`` (plain decoding, e.g. to compare with another
        library; ``repetition_penalty``/``stops`` still apply). ``answer_filter=False``: show every answer
        (no ``generation.answer_filter``). ``draft``: greedy answers by draft and verify (default:
        ``generation.draft``; never with the int8 weights, where it would not be exact). ``beams``:
        greedy answers by beam search over this many candidates (default: ``generation.beams``).
        ``taught``: give it the questions of the run's training file, for the answer filter's
        ``taught_question`` measures (default: only if the filter uses one; ``gptf eval --calibrate``
        asks for them to compare every measure). ``compile``: decode through the run's compiled step
        (default: ``generation.compile``; never with the int8 weights). ``memory=False``: the model alone,
        without the recipe's ``generation.memory`` (``--no-memory``)."""
        recipe_specs = self.recipe.generation.constraints if recipe_constraints else []
        specs = with_decoding_overrides(recipe_specs, repetition_penalty, stops)
        constraints = build_constraints(specs, self.registry, self.tokenizer)
        filter_ = self.answer_filter() if answer_filter else None
        compile_decode = (self.recipe.generation.compile if compile is None else compile) and not self.quantized
        draft = (self.recipe.generation.draft if draft is None else draft) and not self.quantized
        beams = self.recipe.generation.beams if beams is None else beams
        choice = beam_choice(self.recipe.generation.beam_choice, beams)
        # the filter measures with the training questions, or beam search picks its answer with them,
        # or the memory recalls their answers
        with_memory = memory and recipe_constraints and self.recipe.generation.memory is not None
        needed = needs_taught(filter_) or choice == "taught_question" or with_memory
        return Generator(
            self.model,
            self.tokenizer,
            constraints,
            use_cache=use_cache,
            answer_filter=filter_,
            draft=draft,
            draft_bank=self.draft_bank() if draft else None,
            beams=beams,
            taught=self.taught_questions(required=needed) if taught or needed else None,
            beam_choice=choice,
            compiled_step=self.compiled_step() if compile_decode else None,
            memory=self.answer_memory() if with_memory else None,
        )

    def answer_memory(self) -> TaughtMemory | None:
        """The recipe's ``generation.memory`` over the run's training questions, made on first use and
        shared by the run's generators (with what it recalled for each question); None: no memory."""
        if self._memory is None and self.recipe.generation.memory is not None:
            self._memory = taught_memory(
                self.recipe.generation.memory, self.taught_questions(required=True), self.tokenizer
            )
        return self._memory

    def compiled_step(self) -> CompiledDecodeStep:
        """The model's compiled decode step (``generation.compile``), made on first use and shared by
        the run's generators: ``gptf serve`` has one per repetition penalty, ``gptf chat`` one with
        beams and one without, and each would otherwise compile the same graphs again (seconds each)."""
        if self._compiled_step is None:
            self._compiled_step = CompiledDecodeStep(self.model)
        return self._compiled_step

    def taught_questions(self, *, required: bool = False) -> TaughtQuestions | None:
        """The questions of the run's ``data.train``, if that file is the one the run was trained on
        (its sha256 as ``run.json`` recorded it); None if not, or an error if ``required``."""
        if self._taught is None:
            recorded = self.info.get("data", {})
            self._taught = taught_questions(self.recipe, recorded, required=required, path=self.training_file())
        return self._taught

    def draft_bank(self) -> DraftBank:
        """The run's :func:`draft_bank`, built on first use and shared by its generators."""
        if self._draft_bank is None:
            self._draft_bank = draft_bank(self.recipe, self.tokenizer, path=self.training_file())
        return self._draft_bank

    def training_file(self) -> Path:
        """Where the run's ``data.train`` is now (:func:`run_training_file`), looked up once."""
        if self._training_file is None:
            self._training_file = run_training_file(self.recipe, self.files.root, self.info.get("data", {}))
        return self._training_file

    def answer_filter(self) -> Any:
        """The recipe's ``generation.answer_filter`` (None: ``none``)."""
        return build_answer_filter(self.recipe.generation.answer_filter, self.registry, self.tokenizer)


DRAFT_FILE_LIMIT = 64 * 1024 * 1024  # bytes: a larger "training file" is not read for guesses


def run_training_file(recipe: Recipe, run_dir: Path | None = None, recorded: dict[str, str] | None = None) -> Path:
    """Where the run's ``data.train`` is now.

    ``gptf run`` read it relative to the folder it ran in, so that comes first. Asked from another
    folder (``gptf chat --ckpt ~/gptf/checkpoints/teacher_3m`` from the home folder), the file is also
    looked for under each folder above the run directory (a run lives in ``<project>/checkpoints/<name>``),
    but taken from there only if it is the very file the run was trained on: its sha256 as
    ``run.json`` recorded it (``recorded``). Otherwise the path as written, which callers report."""
    path = Path(recipe.data.train)
    expected = (recorded or {}).get(recipe.data.train)
    if path.is_file() or path.is_absolute() or run_dir is None or expected is None:
        return path
    for folder in Path(run_dir).resolve().parents:
        candidate = folder / path
        try:
            if candidate.is_file() and file_sha256(candidate) == expected:
                return candidate
        except OSError:  # unreadable there: keep looking
            continue
    return path


def draft_bank(recipe: Recipe, tokenizer: Tokenizer, *, path: Path | None = None) -> DraftBank:
    """Where draft-and-verify decoding takes its guesses from (:class:`gptf.generate.DraftBank`):
    the distinct answers of the recipe's ``data.train``, tokenized with the run's tokenizer.

    Built when a run is opened, not stored in the run folder, so every run has one, old runs
    included, and it is cheap (the teacher data: 382 distinct answers, ~0.1 s). The file is read
    where ``gptf run`` read it, or at ``path`` (a run's :meth:`LoadedRun.training_file`). It
    never fails: a missing, unreadable or huge file (or ``generation.draft: false``) gives an empty
    bank, which guesses from the answer so far only. Nor does it matter what the file says now: a
    guess only makes decoding faster or slower, never different, since the model checks each one.
    """
    if not recipe.generation.draft:
        return DraftBank()
    path = Path(recipe.data.train) if path is None else path
    try:
        if not path.is_file() or path.stat().st_size > DRAFT_FILE_LIMIT:
            return DraftBank()
        samples = parse_jsonl(path).samples  # the good lines; a bad one only means fewer guesses
    except (OSError, GptfError):
        return DraftBank()
    return DraftBank.from_texts((s.completion for s in samples), tokenizer)


def taught_memory(
    config: MemoryConfig | None, taught: TaughtQuestions | None, tokenizer: Tokenizer
) -> TaughtMemory | None:
    """``generation.memory`` as a decoding constraint over the taught answers (None: no memory)."""
    if config is None or taught is None:
        return None
    return TaughtMemory(
        taught, tokenizer, weight=config.weight, neighbours=config.neighbours, temperature=config.temperature
    )


def needs_taught(answer_filter: Any) -> bool:
    """Whether ``answer_filter`` measures how much a question looks like the taught ones."""
    return getattr(answer_filter, "measure", None) in TAUGHT_MEASURES


def beam_choice(chosen: str, beams: int) -> str:
    """``generation.beam_choice`` as it applies with ``beams``: greedy decoding has nothing to choose from."""
    return chosen if beams > 1 else "likelihood"


def taught_questions(
    recipe: Recipe, recorded: dict[str, str] | None = None, *, required: bool = False, path: Path | None = None
) -> TaughtQuestions | None:
    """The (question, answer) pairs of the recipe's ``data.train``, for the answer filter's
    ``taught_question`` measures (:class:`gptf.decoding.taught_questions.TaughtQuestions`).

    Read from the file, relative to the current folder, as ``gptf run`` read it, or at ``path`` (a run's
    :meth:`LoadedRun.training_file`). ``recorded``: the data hashes of ``run.json``;
    the file must still be the one the run was trained on, since what it says decides which answers
    are shown. None when the file is missing, unreadable or changed;
    with ``required`` (the recipe's filter measures with it, or its beam search chooses with it)
    that is an error saying which."""
    found = Path(recipe.data.train) if path is None else path
    problem = ""
    try:
        if not found.is_file():
            problem = "is not here"
        elif recorded is not None and recorded.get(recipe.data.train) not in (None, file_sha256(found)):
            problem = "has changed since the run was trained (its sha256 differs from run.json's)"
        else:
            samples = parse_jsonl(found).samples
            return TaughtQuestions((s.prompt, s.completion) for s in samples)
    except (OSError, GptfError) as exc:
        problem = f"cannot be read ({exc})"
    if required:
        raise GptfError(
            f"this run compares questions with the training questions of {recipe.data.train} (generation.memory, "
            f"generation.beam_choice: taught_question, or the answer filter's taught_question measure), and that "
            f"file {problem}",
            hint="run from the folder the run was trained in (or keep the run inside it: checkpoints/<name>), "
            "or choose another measure with gptf eval --calibrate "
            "(and generation.beam_choice: likelihood, generation.memory: null)",
        )
    return None


def with_decoding_overrides(
    specs: list[ComponentSpec], repetition_penalty: float | None, stops: list[str] | None
) -> list[ComponentSpec]:
    """Apply ``--repetition-penalty`` / ``--stop`` to the recipe's constraint list."""
    specs = list(specs)
    if repetition_penalty is not None:
        specs = [s for s in specs if s.name != "repetition_penalty"]
        specs.append(ComponentSpec("repetition_penalty", {"penalty": repetition_penalty}))
    if stops:
        existing = next((s for s in specs if s.name == "stop_strings"), None)
        merged = list(existing.params.get("stops", [])) if existing else []
        specs = [s for s in specs if s.name != "stop_strings"]
        specs.append(ComponentSpec("stop_strings", {"stops": merged + [s for s in stops if s not in merged]}))
    return specs


def load_run(
    path: str | Path,
    *,
    quantized: bool = False,
    device: str = "cpu",
    trust_plugins: bool = False,
    verify: bool = True,
) -> LoadedRun:
    """Rebuild a finished run; ``device``: auto, cpu, cuda or mps (int8 weights run on the CPU only).

    A run folder may come from anyone, so nothing in it runs or is believed unchecked: plugin
    code files its recipe names are refused unless ``trust_plugins``; every file the model is
    rebuilt from must have the sha256 recorded in ``run.json`` unless ``verify`` is off.
    """
    target = resolve_device("cpu" if quantized and device == "auto" else device)
    if quantized and target.type != "cpu":
        raise GptfError(
            f"--quantized: the int8 weights run on the CPU only, not on {target}",
            hint="drop --quantized to use the fp32 weights on the GPU, or use --device cpu",
        )
    files = RunFiles(Path(path))
    holder = lock_holder(files.root)
    if holder is not None:
        raise RunFolderBusy(
            f"{files.root} is being written by a gptf run right now ({holder}): its files are not finished",
            hint="wait until that run has finished, then try again",
        )
    files.require()
    info = read_run_record(files, verify=verify)  # what the run was made with (gptf.train.fingerprints)
    data = read_recipe_file(files.recipe)
    recipe = recipe_from_dict(data, str(files.recipe))
    check_plugin_files(recipe, info, files)
    refuse_untrusted_plugins(recipe, files, trust_plugins)
    registry = open_registry(recipe.plugins, files.root)
    check_components_present(recipe, registry, info, files)
    tokenizer = load_run_tokenizer(recipe, registry, files, info)
    model = build_model(recipe, registry, tokenizer.vocab_size)
    check_weight_shapes(model, files.weights)
    if verify:
        verify_run_files(files, info, [files.recipe, files.tokenizer, files.weights])
    load_weights(model, files.weights)
    model.eval()
    if quantized:
        model = load_quantized(model, recipe, registry, files, info if verify else None)
    model = model.to(target)
    return LoadedRun(files, recipe, registry, tokenizer, model, quantized, info)


def load_quantized(
    model: torch.nn.Module, recipe: Recipe, registry: Registry, files: RunFiles, info: dict[str, Any] | None
) -> torch.nn.Module:
    """The run's int8 model, rebuilt from its fp32 skeleton and ``model.int8.safetensors``
    (checked against run.json first, unless ``info`` is None: ``--no-verify``)."""
    quantizer = build_quantizer(recipe, registry)
    if quantizer is None:
        raise CheckpointError(f"{files.root} was trained with quantizer: none, so it has no int8 weights")
    tensors = load_tensors(files.quantized)
    if info is not None:
        verify_run_files(files, info, [files.quantized])
    try:
        return quantizer.load(model, tensors)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{files.quantized}: does not match the model ({exc})") from exc


def load_run_tokenizer(recipe: Recipe, registry: Registry, files: RunFiles, info: dict[str, Any]) -> Tokenizer:
    """The tokenizer the run was trained with, checked against what run.json recorded."""
    tokenizer = new_tokenizer(recipe, registry)
    try:
        tokenizer.load(files.tokenizer)
    except Exception as exc:
        raise CheckpointError(f"{files.tokenizer}: cannot load the tokenizer ({exc})") from exc
    check_tokenizer(files, tokenizer, info)
    return tokenizer


def refuse_untrusted_plugins(recipe: Recipe, files: RunFiles, trust_plugins: bool) -> None:
    """Loading a run must not run code from wherever the run folder came from, unless asked."""
    untrusted = untrusted_plugins(recipe.plugins, files.root)
    if untrusted and not trust_plugins:
        listed = "\n".join(f"  - {p}" for p in untrusted)
        raise PluginError(
            f"{files.recipe} names plugin code that would run if this run were loaded:\n{listed}",
            hint="a run folder may come from anyone: read that code first; to run it, add --trust-plugins",
        )
