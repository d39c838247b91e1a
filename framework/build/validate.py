"""Everything ``gptf run`` can check before any work starts, reported all at once.

Phase one (:mod:`gptf.recipe.structure`) already refused unknown keys, wrong
types and numbers that cannot fit together. This is phase two, with the plugins loaded:

* every component name exists and accepts the parameters it is given;
* the files the run reads exist and are not empty;
* the model can actually be built with these shapes: it is built once, so a component that
  refuses a shape (RoPE needs an even head size) is caught here, not after the tokenizer
  has been trained; the same dry build tells whether the model fits in memory. A small model
  (the teacher's 13.5 MB) is built for real; a bigger one on PyTorch's ``meta`` device (shapes
  only, no memory, no time). Not the small one too: on ``meta`` some operations run PyTorch's
  Python reference code, whose first call imports ``torch.compile``'s machinery (~70 MB);
* the optimizer and schedule accept their parameters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from gptf.build.components import (
    build_model,
    build_optimizer,
    build_quantizer,
    build_scheduler,
    component_problems,
    count_parameters,
    minimum_model_bytes,
    model_size_problem,
    open_registry,
    reference_parameter_count,
)
from gptf.build.devices import total_memory
from gptf.build.registry import Registry
from gptf.data import BROKEN_TEXT_HINT, closest_jsonl, format_prompt, has_broken_character, normalize_prompt
from gptf.errors import GptfError, RecipeError, path_kind
from gptf.interfaces import Tokenizer
from gptf.recipe import LoadedRecipe, Recipe

#: Bytes per parameter while training with AdamW in fp32: weight, gradient, two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def validate_for_run(loaded: LoadedRecipe, console: Console | None = None) -> Registry:
    """Load the recipe's plugins and check everything a run needs; one error lists every problem."""
    recipe = loaded.recipe
    registry = open_registry(recipe.plugins, loaded.base_dir)
    failed = [p for p in registry.plugins if not p.ok]
    problems = component_problems(recipe, registry)
    components_ok = not problems
    if problems and failed:
        problems += [
            f"note: plugin '{p.name}' ({p.origin}, {p.location}) failed to load and was skipped: {p.error}"
            for p in failed
        ]
    problems += file_problems(recipe)
    problems += demo_prompt_problems(recipe)
    if components_ok:
        problems += build_problems(recipe, registry)
    if problems:
        raise RecipeError(str(loaded.chain[0]), problems)
    if console is not None:
        test_problem = data_file_problem("data.test", recipe.data.test)  # only 'gptf eval' reads it
        if test_problem:
            console.print(f"[yellow]warning: {test_problem}[/]", highlight=False)
        for p in failed:
            console.print(
                f"[yellow]warning: plugin '{p.name}' ({p.origin}, {p.location}) failed to load and was "
                f"skipped: {p.error}[/]",
                highlight=False,
            )
    return registry


def data_file_problem(key: str, value: str | None) -> str | None:
    """What is wrong with the data file at recipe key ``key``, if anything."""
    if not value:
        return None
    path = Path(value)
    if not path.exists():
        close = closest_jsonl(path)
        guess = f"did you mean {close}? " if close is not None else ""
        return f"{key}: file not found: {path} ({guess}paths are relative to the folder gptf runs in: {Path.cwd()})"
    if not path.is_file():
        return f"{key}: {path} is {path_kind(path)}, not a JSONL file"
    if path.stat().st_size == 0:
        return f"{key}: {path} is empty"
    return None


def demo_prompt_problems(recipe: Recipe, tokenizer: Tokenizer | None = None) -> list[str]:
    """The ``demo_prompts`` the end of the run could not answer: empty ones, broken characters and,
    with the run's ``tokenizer``, those that leave no room to answer in ``model.seq_len``."""
    problems = []
    for index, prompt in enumerate(recipe.demo_prompts):
        key = f"demo_prompts[{index}]"
        if not normalize_prompt(prompt):
            problems.append(f"{key}: the prompt is empty (only spaces or invisible characters)")
        elif has_broken_character(prompt):
            problems.append(f"{key}: {BROKEN_TEXT_HINT}")
        elif tokenizer is not None:
            tokens = 1 + len(tokenizer.encode(format_prompt(prompt)))  # <bos> and the templated prompt
            if tokens >= recipe.model.seq_len:
                problems.append(
                    f"{key}: the prompt is {tokens} tokens long, which leaves no room to answer "
                    f"(model.seq_len={recipe.model.seq_len}); shorten it"
                )
    return problems


def file_problems(recipe: Recipe) -> list[str]:
    """The training data files that are missing or empty; paths that are folders where files belong."""
    data = recipe.data
    problems = [p for p in (data_file_problem("data.train", data.train), data_file_problem("data.val", data.val)) if p]
    tokenizer = Path(recipe.tokenizer.path)
    if tokenizer.exists() and not tokenizer.is_file():
        problems.append(f"tokenizer.path: {tokenizer} is {path_kind(tokenizer)}, not a tokenizer file")
    if recipe.run_dir.exists() and not recipe.run_dir.is_dir():
        problems.append(f"output_dir: {recipe.run_dir} is a file, but the run needs a folder there")
    return problems


def build_problems(recipe: Recipe, registry: Registry) -> list[str]:
    """Build the model on the ``meta`` device, and the optimizer, schedule and quantizer."""
    problems = _model_problems(recipe, registry)
    probe = nn.Linear(2, 2)  # the optimizer's own parameters are what is checked, not the model's
    for key, build in (
        ("training.optimizer", lambda: build_optimizer(recipe, registry, probe)),
        ("training.scheduler", lambda: build_scheduler(recipe, registry)),
        ("quantizer", lambda: build_quantizer(recipe, registry)),
    ):
        try:
            build()
        except Exception as exc:
            problems.append(f"{key}: {_reason(exc)}")
    return problems


#: Models up to this size (fp32 weights of the reference shape) are built for real by the check,
#: bigger ones on the ``meta`` device (module docstring).
REAL_BUILD_BYTES = 64 * 2**20


def training_floor_bytes(recipe: Recipe, vocab: int) -> int:
    """A floor on the memory training takes, by arithmetic alone (computed before the dry build,
    which for a billion layers would itself take hours): weights, gradients and AdamW state,
    the layers' objects, one activation per layer and the logits of a micro-batch, the step's
    sample list, and the training text held once per copy."""
    m, t = recipe.model, recipe.training
    tokens = t.micro_batch * m.seq_len
    activations = 4 * tokens * (m.n_embd * m.n_layer + vocab)
    train = Path(recipe.data.train)
    text = train.stat().st_size * (1 + recipe.data.augment_copies) if train.is_file() else 0
    return minimum_model_bytes(recipe, vocab, TRAINING_BYTES_PER_PARAMETER) + activations + 8 * t.batch_size + text


def _model_problems(recipe: Recipe, registry: Registry) -> list[str]:
    m = recipe.model
    vocab = recipe.tokenizer.vocab_size
    shape = f"(n_embd={m.n_embd}, n_head={m.n_head}, head size {m.n_embd // m.n_head}, n_layer={m.n_layer})"
    floor = model_size_problem(recipe, vocab, training_floor_bytes(recipe, vocab), "to train")
    if floor:
        return [floor]
    reference = reference_parameter_count(vocab, m.n_embd, m.n_layer)
    parameters: int | None = None
    if reference * 4 > REAL_BUILD_BYTES:  # big: shapes only, on the meta device
        try:
            with torch.device("meta"):
                parameters = count_parameters(build_model(recipe, registry, vocab))
        except Exception:
            # Some components cannot run on the meta device: build for real below to see whether
            # the failure is genuine, unless that would take too much memory.
            if reference * 4 > 2**30:
                parameters = reference
    if parameters is None:
        try:
            parameters = count_parameters(build_model(recipe, registry, vocab))
        except Exception as exc:
            return [f"model: cannot be built with these shapes {shape}: {_reason(exc)}"]
    memory = total_memory()
    needed = parameters * TRAINING_BYTES_PER_PARAMETER
    if memory is not None and needed > memory:
        return [
            f"model: {parameters:,} parameters {shape} need about {needed / 2**30:,.0f} GiB to train "
            f"(weights, gradients, AdamW state), but this machine has {memory / 2**30:.0f} GiB"
        ]
    return []


def _reason(exc: BaseException) -> str:
    """A GptfError already says what and where; anything else gets its type name."""
    return str(exc) if isinstance(exc, GptfError) else f"{type(exc).__name__}: {exc}"
