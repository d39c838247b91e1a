"""The Python API: what the command line does, as functions for notebooks and scripts.

    import gptf.api as gptf

    result = gptf.train("recipes/teacher_3m.yaml", "training.max_steps=300")  # same as gptf run
    model = gptf.open_run(result.run_dir)                                     # same as --ckpt
    model.ask("什么是注意力机制？")                                             # gptf generate
    model.ask_many(["什么是RoPE？", "什么是GPT？"])                              # batched, greedy
    scores = model.score()                                                    # gptf eval
    model.export("teacher_3m-hf")                                             # gptf export
    table = gptf.ablate("recipes/teacher_3m.yaml", {"model.positional": ["rope", "learned"]}, steps=100)

Every function writes the same run folders, prints the same progress and raises the same
:class:`gptf.errors.GptfError` messages as the command it mirrors; ``quiet=True`` silences the
printing. The command line (:mod:`gptf.cli`) and these functions are two thin layers over the
same core functions (:func:`gptf.run.run_recipe`, :func:`gptf.run.load_run`, :mod:`gptf.evaluate`,
:mod:`gptf.tools`): neither holds logic of its own, so the two behave the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from gptf.decoding.answer_workers import side_by_side_answers
from gptf.errors import GptfError
from gptf.evaluate import (
    EvalFile,
    SplitReport,
    default_eval_files,
    eval_files_for,
    evaluate_files,
)
from gptf.generate import Generation, Generator, greedy_answers
from gptf.plots import LossCurves, read_loss_curves
from gptf.recipe import LoadedRecipe, load_recipe
from gptf.run import LoadedRun, RunResult, check_sampling_options, load_run, run_recipe, sampling_settings
from gptf.tools.ablate import Settings, check_budget, check_swaps_given, parse_swap, run_ablation
from gptf.tools.export import FORMATS, ExportReport, export_hf
from gptf.tools.insight import AttentionMaps, attention_maps

__all__ = ["Model", "RunResult", "ablate", "load", "open_run", "train"]


def _console(quiet: bool, console: Console | None) -> Console:
    if console is not None:
        return console
    return Console(quiet=quiet, highlight=False)


def load(recipe: str | Path, *overrides: str) -> LoadedRecipe:
    """Read a recipe, follow ``extends``, apply ``KEY=VALUE`` overrides and validate it."""
    return load_recipe(Path(recipe), list(overrides))


def train(
    recipe: str | Path | LoadedRecipe,
    *overrides: str,
    resume: bool | str | Path = False,
    force: bool = False,
    init_from: str | Path | None = None,
    device: str = "cpu",
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Train a recipe end to end, exactly as ``gptf run RECIPE [overrides]`` does.

    ``resume=True`` continues the recipe's own run from its last checkpoint (a path: that run
    folder's); ``init_from`` starts from an earlier run's weights. Returns where the run is,
    its losses and its demo answers."""
    loaded = recipe if isinstance(recipe, LoadedRecipe) else load(recipe, *overrides)
    if overrides and isinstance(recipe, LoadedRecipe):
        raise TypeError("pass overrides to gptf.api.load(), or the recipe path to train()")
    out = _console(quiet, console)
    resume_dir = None
    if resume is not False:
        resume_dir = loaded.recipe.run_dir if resume is True else Path(resume)
    init = Path(init_from) if init_from is not None else None
    return run_recipe(loaded, out, device=device, resume=resume_dir, force=force, init_from=init)


class Model:
    """A trained run, opened for questions: the object behind ``--ckpt``."""

    def __init__(self, run: LoadedRun, *, beams: int | None = None, memory: bool = True) -> None:
        self.run = run
        # beams: as --beams (default: the recipe's); memory=False: as --no-memory
        self._generator = run.generator(beams=beams, memory=memory)

    @property
    def path(self) -> Path:
        return self.run.files.root

    @property
    def recipe(self) -> Any:
        return self.run.recipe

    def generate(self, prompt: str, *, seed: int | None = None, **sampling: Any) -> Generation:
        """One answer with every token and its probability. ``sampling``: temperature, top_k,
        top_p, max_new_tokens (default: the recipe's ``generation`` section)."""
        settings = sampling_settings(self.run.recipe, **sampling)
        return self._generator.generate(prompt, settings, seed=seed)

    def ask(self, prompt: str, *, seed: int | None = None, **sampling: Any) -> str:
        """The answer to one question, as ``gptf generate`` prints it."""
        return self.generate(prompt, seed=seed, **sampling).text

    def ask_many(self, prompts: Sequence[str], *, max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers to many questions at once (batched: much faster than one by one)."""
        budget = max_new_tokens or self.run.recipe.generation.max_new_tokens
        with side_by_side_answers():
            return [a.text for a in greedy_answers(self._generator, list(prompts), budget)]

    def score(
        self,
        data: Sequence[str | Path] | None = None,
        *,
        recall_samples: int = 200,
        quiet: bool = True,
        console: Console | None = None,
    ) -> dict[str, SplitReport]:
        """Greedy answers to each data file, scored as ``gptf eval`` does; by file name."""
        recipe = self.run.recipe
        files: list[EvalFile] = (
            eval_files_for(list(data), recipe.data.train) if data else default_eval_files(recipe.data, recall_samples)
        )
        settings = sampling_settings(recipe, temperature=0.0, top_k=0, top_p=1.0)
        with side_by_side_answers():
            reports = evaluate_files(
                self._generator, files, settings, _console(quiet, console), train_path=recipe.data.train
            )
        return {r.name: r for r in reports}

    def loss_curves(self) -> LossCurves:
        """The train and val losses logged while training (from ``metrics.jsonl``)."""
        return read_loss_curves(self.run.files.metrics)

    def attention(self, prompt: str, *, with_answer: bool = False) -> AttentionMaps:
        """Every layer's attention weights for the templated prompt, as ``gptf attention`` draws them."""
        return attention_maps(self.run, prompt, with_answer=with_answer)

    def export(self, out: str | Path, *, format: str = "hf", force: bool = False) -> ExportReport:
        """Write the run for transformers (a Llama folder), as ``gptf export`` does; checked against gptf."""
        if format not in FORMATS:
            raise GptfError(f"format {format!r}: unknown; valid choices: {', '.join(FORMATS)}")
        return export_hf(self.run, Path(out), force=force)

    @property
    def generator(self) -> Generator:
        """The decoder with the recipe's constraints, for finer control."""
        return self._generator


def open_run(
    path: str | Path, *, quantized: bool = False, device: str = "cpu", beams: int | None = None, memory: bool = True
) -> Model:
    """Open a finished run folder (``checkpoints/<name>``) for questions. ``beams``: answers at
    temperature 0 by beam search over this many candidates, as ``--beams`` (default: the recipe's
    ``generation.beams``; 1 = plain greedy). ``memory=False``: the model alone, without the recipe's
    ``generation.memory`` (as ``--no-memory``)."""
    if beams is not None:
        check_sampling_options({"beams": beams})
    return Model(load_run(Path(path), quantized=quantized, device=device), beams=beams, memory=memory)


def ablate(
    recipe: str | Path,
    swaps: Mapping[str, Sequence[Any]] | Sequence[str],
    *overrides: str,
    steps: int | None = None,
    seeds: int = 1,
    out: str | Path | None = None,
    eval_interval: int | None = None,
    tune: Mapping[str, Sequence[Any]] | str | None = None,
    budget: str = "steps",
    jobs: int | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Compare variants as ``gptf ablate`` does; returns the summary (``summary["variants"]`` holds
    the table rows, ``summary["reading"]`` the sentences of ablation.md).

    ``swaps``: ``{"model.positional": ["rope", "learned"]}`` or ``["model.positional=rope,learned"]``;
    ``tune``: ``{"training.lr": [6e-4, 2e-3]}`` or ``"training.lr=6e-4,2e-3"``; ``budget``: ``"steps"``
    or ``"seconds"``; ``jobs``: runs at once (default: one per core)."""
    texts = [f"{k}={','.join(map(str, v))}" for k, v in swaps.items()] if isinstance(swaps, Mapping) else list(swaps)
    if isinstance(tune, Mapping):
        (key, values), *more = tune.items()
        if more:
            raise TypeError("tune one key at a time")
        tune = f"{key}={','.join(map(str, values))}"
    settings = Settings(
        Path(recipe),
        check_swaps_given(texts),
        list(overrides),
        steps,
        seeds,
        Path(out) if out is not None else None,
        eval_interval,
        tune=parse_swap(tune, "--tune") if tune else None,
        budget=check_budget(budget),
        jobs=jobs,
    )
    return run_ablation(settings, _console(quiet, console))
