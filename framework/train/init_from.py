"""Continue training from a finished run (``gptf run RECIPE --init-from checkpoints/teacher_3m``).

The new run starts from the old run's *weights* only: the optimizer, its moments and the
learning-rate schedule start fresh, as after adding data. (To continue an interrupted run
exactly, use ``--resume`` instead.) Two things must match, and are checked before any work:

* the tokenizer: token ids mean nothing with another vocabulary. If the recipe's
  ``tokenizer.path`` does not exist yet, the old run's tokenizer is copied there;
* the model's shape (layers, width, vocabulary...), or the weights do not fit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from torch import nn

from gptf.build.components import new_tokenizer
from gptf.build.registry import Registry
from gptf.errors import CheckpointError, GptfError
from gptf.recipe import Recipe, read_recipe_file
from gptf.train.fingerprints import tokenizer_difference
from gptf.train.run_files import RunFiles, load_weights


def adopt_tokenizer(recipe: Recipe, registry: Registry, init_from: Path, console: Console) -> None:
    """Make sure ``tokenizer.path`` holds the tokenizer of the run we start from."""
    files = RunFiles(init_from)
    files.require()
    target = Path(recipe.tokenizer.path)
    if recipe.tokenizer.rebuild:
        raise GptfError(
            "--init-from keeps the old run's tokenizer, but the recipe says tokenizer.rebuild=true",
            hint="drop tokenizer.rebuild=true: new token ids would not fit the old weights",
        )
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files.tokenizer, target)
        console.print(f"tokenizer: copied {files.tokenizer} -> {target} (continuing from {init_from})")
        return
    old, new = new_tokenizer(recipe, registry), new_tokenizer(recipe, registry)
    try:
        old.load(files.tokenizer)
        new.load(target)
    except Exception as exc:
        raise CheckpointError(f"cannot compare tokenizers {files.tokenizer} and {target}: {exc}") from exc
    difference = tokenizer_difference(old, new)
    if difference:
        raise CheckpointError(
            f"--init-from {init_from}: its tokenizer ({files.tokenizer}) differs from the recipe's "
            f"tokenizer.path {target}: {difference}",
            hint=f"set tokenizer.path={files.tokenizer} to continue with the old tokenizer",
        )


def load_initial_weights(model: nn.Module, recipe: Recipe, init_from: Path) -> None:
    """Copy the old run's fp32 weights into the freshly built model."""
    files = RunFiles(init_from)
    try:
        load_weights(model, files.weights)
    except CheckpointError as exc:
        old_model = read_recipe_file(files.recipe).get("model", {})
        from gptf.recipe import recipe_to_dict

        new_model = recipe_to_dict(recipe)["model"]
        differing = [
            f"model.{key}: {old_model.get(key)!r} there, {new_model.get(key)!r} here"
            for key in sorted(set(old_model) | set(new_model))
            if old_model.get(key) != new_model.get(key)
        ]
        detail = "; ".join(differing) if differing else str(exc)
        raise CheckpointError(
            f"--init-from {init_from}: its weights do not fit this recipe's model ({detail})",
            hint="continue training with the same model settings as the old run",
        ) from exc
