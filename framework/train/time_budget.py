"""Training that fits the lesson: as many of the recipe's steps as this CPU can do in the time set.

The same recipe runs on very different laptops. Measured on two 2-core machines, one step of the
teacher recipe took 116 ms on an AMD Zen 4 (bf16) and 150-170 ms on an Intel Xeon without bf16
(fp32): 900 steps were a 2-minute run on one and a 3-minute run on the other. A class has its
minutes, not its steps. With ``training.time_budget_s`` set, ``gptf run`` first *times* a few
training steps and one evaluation of the val loss on this machine (:func:`measure_step`), then
trains ``training.max_steps`` or, where they would not fit, the most steps in multiples of 50
that do (:func:`steps_within_budget`). The timing steps are undone afterwards (weights, optimizer
state and step counter restored), so a run that chose 600 steps is bit for bit the run
``training.max_steps=600`` would have been. The run's ``recipe.yaml`` records the steps chosen:
resuming continues with them, and ``training.time_budget_s=null`` turns the budget off.

The schedule (warm-up, cosine decay) is built for the steps chosen, so the learning rate still
ends low: cutting a 900-step run off at step 600 would leave it at half its peak.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import TYPE_CHECKING

import attrs
import torch

from gptf.errors import CheckpointError
from gptf.recipe import LoadedRecipe
from gptf.train.checkpoint import find_checkpoint, read_recipe

if TYPE_CHECKING:
    from pathlib import Path

    from gptf.train.trainer import Trainer

#: Steps are chosen in multiples of 50 (the recipe's own max_steps is always allowed): a run on
#: the same machine then lands on the same number even when its timing differs by a few percent.
GRANULARITY = 50
PROBE_STEPS = 6  # timed steps (after 2 untimed ones: the first steps build kernels and buffers)


@attrs.frozen
class StepBudget:
    """What the budget decided, for the banner and run.json."""

    budget_s: float
    planned_steps: int  # the recipe's training.max_steps
    steps: int  # the steps chosen
    seconds_per_step: float  # measured here, for a step of average length
    eval_seconds: float  # one evaluation of the val loss, measured here
    estimated_s: float  # steps and evaluations, as estimated

    @property
    def reason(self) -> str:
        rate = f"{1000 * self.seconds_per_step:.0f} ms/step measured here"
        budget = f"the {self.budget_s:g} s budget (~{self.estimated_s:.0f} s, {rate})"
        if self.estimated_s > self.budget_s:  # not even the fewest fit: a run still trains
            return (
                f"not even {self.steps} steps fit {budget}: training {self.steps}, the fewest it trains; "
                "raise training.time_budget_s for more"
            )
        if self.steps == self.planned_steps:
            return f"all {self.planned_steps} steps fit {budget}"
        return (
            f"{self.steps} of the recipe's {self.planned_steps} steps fit {budget}; "
            f"training.time_budget_s=null trains all {self.planned_steps}"
        )

    def as_record(self) -> dict:
        return {**attrs.asdict(self), "reason": self.reason}


def estimated_seconds(steps: int, step_s: float, eval_s: float, eval_interval: int) -> float:
    """Training time for ``steps``: the steps, and an evaluation every ``eval_interval`` and at the end."""
    evaluations = steps // eval_interval + (1 if steps % eval_interval else 0)
    return steps * step_s + evaluations * eval_s


def steps_within_budget(
    max_steps: int, budget_s: float, step_s: float, eval_s: float, eval_interval: int, granularity: int = GRANULARITY
) -> int:
    """``max_steps`` if they fit ``budget_s``, else the most whole ``granularity`` steps that do;
    if not even ``granularity`` steps fit, ``granularity`` (or ``max_steps`` if fewer): a run always trains."""

    def fits(steps: int) -> bool:
        return estimated_seconds(steps, step_s, eval_s, eval_interval) <= budget_s

    if fits(max_steps):
        return max_steps
    for steps in range((max_steps - 1) // granularity * granularity, 0, -granularity):
        if fits(steps):
            return steps
    return min(max_steps, granularity)


def measure_step(trainer: Trainer, mean_tokens_per_step: float, probe_steps: int = PROBE_STEPS) -> tuple[float, float]:
    """Seconds per training step of average length and per val-loss evaluation, on this machine.

    Runs ``2 + probe_steps`` real steps of ``trainer`` and one evaluation, then restores the
    model's weights, the optimizer's state, the step counter and the random generator, so
    the run then starts exactly as it would have without them. Steps differ in length (the
    samples do), so the time is measured per token and scaled to ``mean_tokens_per_step``."""
    model, optimizer = trainer.model, trainer.optimizer
    saved_weights = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_state = copy.deepcopy(trainer.state)
    saved_rng = torch.get_rng_state()
    try:
        for _ in range(2):
            trainer.train_step()
        per_token = []
        for _ in range(probe_steps):
            tokens_before = trainer.state.tokens_seen
            started = time.perf_counter()
            trainer.train_step()
            per_token.append((time.perf_counter() - started) / max(1, trainer.state.tokens_seen - tokens_before))
        eval_s = 0.0
        if trainer.val_split is not None:
            started = time.perf_counter()
            trainer.evaluate()
            eval_s = time.perf_counter() - started
    finally:
        model.load_state_dict(saved_weights)
        optimizer.load_state_dict(saved_optimizer)
        optimizer.zero_grad(set_to_none=True)
        trainer.state = saved_state
        torch.set_rng_state(saved_rng)
        model.train()
    return statistics.median(per_token) * mean_tokens_per_step, eval_s


def plan_steps(trainer: Trainer, budget_s: float, mean_tokens_per_step: float) -> StepBudget:
    """Time ``trainer`` here (:func:`measure_step`) and choose its steps for ``budget_s``."""
    cfg = trainer.config
    step_s, eval_s = measure_step(trainer, mean_tokens_per_step)
    steps = steps_within_budget(cfg.max_steps, budget_s, step_s, eval_s, cfg.eval_interval, GRANULARITY)
    estimate = estimated_seconds(steps, step_s, eval_s, cfg.eval_interval)
    return StepBudget(budget_s, cfg.max_steps, steps, step_s, eval_s, estimate)


def with_max_steps(loaded: LoadedRecipe, steps: int) -> LoadedRecipe:
    """``loaded`` with ``training.max_steps`` set to ``steps`` (the run's recipe.yaml records it)."""
    training = attrs.evolve(loaded.recipe.training, max_steps=steps)
    data = copy.deepcopy(loaded.data)
    data.setdefault("training", {})["max_steps"] = steps
    return attrs.evolve(loaded, recipe=attrs.evolve(loaded.recipe, training=training), data=data)


def steps_chosen_before(loaded: LoadedRecipe, run_dir: Path) -> LoadedRecipe:
    """Resuming a run whose steps its time budget chose: the steps it chose (its checkpoint's
    recipe), not the recipe's ``max_steps`` again. Anything else is left to the resume checks."""
    if loaded.recipe.training.time_budget_s is None:
        return loaded
    try:
        saved = read_recipe(find_checkpoint(run_dir)).get("training")
    except CheckpointError:
        return loaded  # the resume itself says what is missing
    if not isinstance(saved, dict) or saved.get("time_budget_s") is None:
        return loaded
    steps = saved.get("max_steps")
    if type(steps) is not int or not 0 < steps <= loaded.recipe.training.max_steps:
        return loaded
    return with_max_steps(loaded, steps)
