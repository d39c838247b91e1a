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

A laptop (or a shared machine) does not always keep the pace it was timed at: on the Intel Xeon the
probe measured 138 ms per step and the run then went at 171, 137 s for a 115 s budget. So the run
also *keeps* to the budget (:class:`KeepToBudget`): at every evaluation it looks at its pace (the mean
of the last interval's and the whole run's so far), and where the steps left would end more than
:data:`SLACK` past the budget, it trains fewer (again in multiples of 50), rebuilding the schedule for
them so the learning rate still ends low. It never adds steps. The run's recipe and ``run.json``
record the new number.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import torch

from gptf.errors import CheckpointError
from gptf.interfaces import Callback
from gptf.recipe import LoadedRecipe
from gptf.train.checkpoint import find_checkpoint, read_recipe

if TYPE_CHECKING:
    from pathlib import Path

    from gptf.train.trainer import Trainer

#: Steps are chosen in multiples of 50 (the recipe's own max_steps is always allowed): a run on
#: the same machine then lands on the same number even when its timing differs by a few percent.
GRANULARITY = 50
PROBE_STEPS = 6  # timed steps (after 2 untimed ones: the first steps build kernels and buffers)
#: Steps are re-planned only where the steps left would end more than this share past the budget
#: (a few percent either way is noise, not a slower machine).
SLACK = 0.05


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


def steps_left_within(
    step: int, planned: int, remaining_s: float, step_s: float, granularity: int = GRANULARITY
) -> int:
    """The most steps in all (``planned`` or fewer, in whole ``granularity``) whose steps after ``step``
    take at most ``remaining_s`` at ``step_s`` seconds each; at least the first multiple of
    ``granularity`` after ``step`` (or ``planned``, if fewer): a run does not stop in the middle."""
    if (planned - step) * step_s <= remaining_s:
        return planned
    fewest = min(planned, (step // granularity + 1) * granularity)
    for steps in range((planned - 1) // granularity * granularity, fewest, -granularity):
        if (steps - step) * step_s <= remaining_s:
            return steps
    return fewest


#: The clock :class:`KeepToBudget` reads (tests may stand in a slower machine).
clock: Callable[[], float] = time.perf_counter


class KeepToBudget(Callback):
    """At every evaluation, fewer steps where the steps left would overrun the budget at the run's pace
    (the mean of the last interval's and the whole run's, evaluations included); ``replan(steps, reason)``
    applies the new number."""

    def __init__(self, budget_s: float, replan: Callable[[int, str], None], granularity: int | None = None) -> None:
        self.budget_s, self.replan = budget_s, replan
        self.granularity = granularity or GRANULARITY
        self.started = self._last_time = 0.0
        self.start_step = self._last_step = 0

    def on_train_start(self, trainer: Any) -> None:
        self.started = self._last_time = clock()
        self.start_step = self._last_step = trainer.state.step

    def on_eval(self, trainer: Any, metrics: dict[str, Any]) -> None:
        now, step, planned = clock(), trainer.state.step, trainer.config.max_steps
        done = step - self._last_step
        if done <= 0 or step >= planned:
            return
        elapsed = now - self.started
        recent, overall = (now - self._last_time) / done, elapsed / max(1, step - self.start_step)
        pace = (recent + overall) / 2  # one slow interval alone does not cut a run short
        self._last_time, self._last_step = now, step
        if elapsed + (planned - step) * pace <= self.budget_s * (1 + SLACK):
            return
        steps = steps_left_within(step, planned, self.budget_s - elapsed, pace, self.granularity)
        if steps < planned:
            self.replan(
                steps,
                f"slower than timed ({1000 * pace:.0f} ms/step: {1000 * recent:.0f} over the last {done} steps, "
                f"{1000 * overall:.0f} since the start): {steps} steps instead of {planned}, to end within the "
                f"{self.budget_s:g} s budget ({elapsed:.0f} s so far, step {step})",
            )


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
