"""training.time_budget_s: as many steps as fit, chosen by timing this machine, and otherwise the
same run: the weights equal those of a run told that many steps, and a resumed run keeps them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, TINY_RECIPE, copy_tiny_data, invoke

import gptf.train.time_budget as time_budget
from gptf.train.time_budget import KeepToBudget, estimated_seconds, steps_left_within, steps_within_budget

STEPS = 12


def test_estimate_counts_the_steps_and_every_evaluation() -> None:
    assert estimated_seconds(100, 0.1, 1.0, eval_interval=50) == pytest.approx(100 * 0.1 + 2 * 1.0)
    assert estimated_seconds(120, 0.1, 1.0, eval_interval=50) == pytest.approx(12 + 3 * 1.0)  # and one at the end


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (1000.0, 900),  # everything fits: the recipe's steps
        (91.0, 900),  # exactly: 900 * 0.1 + 1 evaluation
        (80.0, 750),  # 800 would take 80 + 1 s
        (10.0, 50),  # the fewest it trains in multiples
        (0.5, 50),  # nothing fits: still trains (the fewest)
    ],
)
def test_steps_within_budget(budget: float, expected: int) -> None:
    assert steps_within_budget(900, budget, step_s=0.1, eval_s=1.0, eval_interval=1000, granularity=50) == expected


def test_a_run_shorter_than_one_multiple_keeps_its_steps() -> None:
    assert steps_within_budget(30, 0.01, step_s=0.1, eval_s=0.0, eval_interval=10, granularity=50) == 30
    assert steps_within_budget(130, 10.0, step_s=0.1, eval_s=0.0, eval_interval=1000, granularity=50) == 100


def test_the_reason_says_what_was_chosen_and_how_to_turn_it_off() -> None:
    cut = time_budget.StepBudget(115.0, 900, 650, 0.158, 0.7, 107.3)
    assert "650 of the recipe's 900 steps fit the 115 s budget" in cut.reason
    assert "158 ms/step" in cut.reason and "training.time_budget_s=null" in cut.reason
    assert cut.as_record()["steps"] == 650
    whole = time_budget.StepBudget(115.0, 900, 900, 0.116, 0.5, 109.0)
    assert whole.reason.startswith("all 900 steps fit the 115 s budget")
    short = time_budget.StepBudget(2.0, 900, 50, 0.158, 0.7, 8.6)
    assert short.reason.startswith("not even 50 steps fit the 2 s budget (~9 s")
    assert "raise training.time_budget_s" in short.reason


@pytest.mark.parametrize(
    ("step", "remaining_s", "expected"),
    [
        (300, 100.0, 800),  # 500 steps left at 0.2 s: exactly 100 s, all fit
        (300, 80.0, 700),  # 400 more fit: 700 in all
        (300, 75.0, 650),  # 375 more fit: the multiple of 50 below, 650
        (300, 1.0, 350),  # next to nothing left: the next multiple of 50 (a run does not stop midway)
        (300, -5.0, 350),  # already past the budget: the same
        (350, 1.0, 400),  # at a multiple: the next one
        (780, 1.0, 800),  # the planned steps come first
    ],
)
def test_steps_left_within(step: int, remaining_s: float, expected: int) -> None:
    assert steps_left_within(step, 800, remaining_s, step_s=0.2, granularity=50) == expected


class FakeTrainer:
    def __init__(self, steps: int) -> None:
        self.state = type("State", (), {"step": 0})()
        self.config = type("Config", (), {"max_steps": steps})()


def test_keeping_to_the_budget_looks_at_the_pace_of_the_last_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planned: 800 steps for a 115 s budget. The machine keeps its pace for 200 steps, then slows down
    by a third: at the next evaluation the steps left would end past the budget, so fewer steps."""
    now = [0.0]
    monkeypatch.setattr(time_budget, "clock", lambda: now[0])
    replanned: list[tuple[int, str]] = []
    keep = KeepToBudget(115.0, lambda steps, reason: replanned.append((steps, reason)))
    trainer = FakeTrainer(800)
    keep.on_train_start(trainer)
    for step, seconds in [(100, 14.0), (200, 14.0)]:  # 0.14 s per step with its evaluation: on time
        trainer.state.step, now[0] = step, now[0] + seconds
        keep.on_eval(trainer, {})
    assert replanned == []
    trainer.state.step, now[0] = 300, now[0] + 19.0  # 0.19 s per step now
    keep.on_eval(trainer, {})
    # the pace: (0.19 + 47 / 300) / 2 = 0.173 s per step; 500 more would end at 134 s. 68 s left: 392 more
    # steps, so 650 in all
    assert [steps for steps, _ in replanned] == [650]
    assert replanned[0][1].startswith(
        "slower than timed (173 ms/step: 190 over the last 100 steps, 157 since the start): 650 steps instead of 800"
    )
    assert "the 115 s budget (47 s so far, step 300)" in replanned[0][1]
    trainer.config.max_steps = 650
    trainer.state.step, now[0] = 400, now[0] + 17.0  # about that pace: 650 fits, nothing more to change
    keep.on_eval(trainer, {})
    trainer.state.step, now[0] = 650, now[0] + 45.0  # the last evaluation: nothing left to plan
    keep.on_eval(trainer, {})
    assert len(replanned) == 1


def test_within_the_slack_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(time_budget, "clock", lambda: now[0])
    replanned: list[int] = []
    keep = KeepToBudget(100.0, lambda steps, reason: replanned.append(steps))
    trainer = FakeTrainer(1000)
    keep.on_train_start(trainer)
    trainer.state.step, now[0] = 500, 52.0  # 104 s at this pace: 4% over, within SLACK
    keep.on_eval(trainer, {})
    assert replanned == []
    keep.on_eval(trainer, {})  # an evaluation without a step since the last one: no pace to measure
    assert replanned == []


# ---------------------------------------------------------------- a whole run (tiny recipe)


def make_folder(folder: Path, budget: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    copy_tiny_data(folder)
    shutil.copy(FIXTURES / "trouble_plugin.py", folder / "trouble_plugin.py")
    recipe = folder / "r.yaml"
    recipe.write_text(
        f"extends: {TINY_RECIPE}\nplugins: [./trouble_plugin.py]\n"
        f"training: {{max_steps: {STEPS}, time_budget_s: {budget}, callbacks: [signal_at]}}\n"
        "demo_prompts: []\n"
    )
    return recipe


@pytest.fixture
def steady_machine(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """The real timing (steps taken and undone), reported as 0.1 s per step and no evaluation
    time, and steps chosen in multiples of 4: a 0.85 s budget then allows 8 of the 12 steps. A
    steady machine keeps that pace: the run never has to re-plan (however slow this one is)."""
    real = time_budget.measure_step
    measured: list[tuple[float, float]] = []

    def steady(trainer, mean_tokens_per_step, probe_steps=time_budget.PROBE_STEPS):
        measured.append(real(trainer, mean_tokens_per_step, probe_steps))
        return 0.1, 0.0

    monkeypatch.setattr(time_budget, "measure_step", steady)
    monkeypatch.setattr(time_budget, "GRANULARITY", 4)
    monkeypatch.setattr(time_budget, "SLACK", math.inf)
    return measured


def run_in(folder: Path, *args: str):
    import os

    old = Path.cwd()
    os.chdir(folder)
    try:
        return invoke(["run", "r.yaml", *args])
    finally:
        os.chdir(old)


def run_dir(folder: Path) -> Path:
    return folder / "checkpoints" / "tiny"


def test_a_budgeted_run_is_the_run_of_the_steps_it_chose(
    tmp_path: Path, steady_machine: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgeted = tmp_path / "budgeted"
    make_folder(budgeted, "0.85")
    result = run_in(budgeted)
    assert result.exit_code == 0, result.output
    assert "training: 12 steps or as many as fit 0.85 s, batch" in result.stdout
    assert "steps: 8 of the recipe's 12 steps fit the 0.85 s budget" in result.stdout
    assert len(steady_machine) == 1 and steady_machine[0][0] > 0  # it did time real steps
    info = json.loads((run_dir(budgeted) / "run.json").read_text())
    assert info["steps"] == 8 and info["time_budget"]["steps"] == 8 and info["time_budget"]["planned_steps"] == 12
    assert "max_steps: 8" in (run_dir(budgeted) / "recipe.yaml").read_text()

    fixed = tmp_path / "fixed"
    make_folder(fixed, "null")
    assert run_in(fixed, "training.max_steps=8").exit_code == 0
    assert (run_dir(budgeted) / "model.safetensors").read_bytes() == (run_dir(fixed) / "model.safetensors").read_bytes()
    assert logged(budgeted) == logged(fixed)


def logged(folder: Path) -> list[dict]:
    """The numbers a run logged that must match between runs (not the timings)."""
    keep = ("step", "loss", "lr", "grad_norm", "val_loss")
    lines = (run_dir(folder) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k in keep} for line in lines]


def slower_than_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the steady timing, a machine 100 s slower at every look at the clock: 25 s a step of 4."""
    monkeypatch.setattr(time_budget, "SLACK", 0.05)
    calls = [0]

    def slow_clock() -> float:
        calls[0] += 1
        return 100.0 * calls[0]

    monkeypatch.setattr(time_budget, "clock", slow_clock)


def test_a_run_slower_than_timed_trains_fewer_steps_and_its_schedule_still_ends_low(
    tmp_path: Path, steady_machine: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All 12 steps fit 60 s as timed, but the machine then takes 25 s a step: at the first evaluation
    (step 4) the run re-plans to 8 steps, with the schedule of an 8-step run from there on."""
    slower_than_timed(monkeypatch)
    make_folder(tmp_path / "slow", "60")
    result = run_in(tmp_path / "slow")
    assert result.exit_code == 0, result.output
    assert f"steps: all {STEPS} steps fit the 60 s budget" in result.stdout
    assert (
        "steps: slower than timed (25000 ms/step: 25000 over the last 4 steps, 25000 since the start): 8 steps "
        "instead of 12" in result.stdout.replace("\n", " ")
    )
    info = json.loads((run_dir(tmp_path / "slow") / "run.json").read_text())
    assert info["steps"] == 8
    assert [(r["at_step"], r["steps"]) for r in info["time_budget"]["replanned"]] == [(4, 8)]
    assert "max_steps: 8" in (run_dir(tmp_path / "slow") / "recipe.yaml").read_text()
    fixed = tmp_path / "fixed"
    make_folder(fixed, "null")
    assert run_in(fixed, "training.max_steps=8").exit_code == 0
    slow_lr, fixed_lr = (
        [record["lr"] for record in logged(folder) if "lr" in record] for folder in (tmp_path / "slow", fixed)
    )
    assert slow_lr[-2:] == fixed_lr[-2:]  # from the re-plan on, the 8-step schedule: it ends as low


def test_resuming_a_re_planned_run_keeps_its_fewer_steps(
    tmp_path: Path, steady_machine: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    slower_than_timed(monkeypatch)
    make_folder(tmp_path, "60")
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "6:SIGINT")
    interrupted = run_in(tmp_path)
    assert interrupted.exit_code == 130 and "8 steps instead of 12" in interrupted.stdout
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    resumed = run_in(tmp_path, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "at step 6 of 8" in resumed.stdout
    assert json.loads((run_dir(tmp_path) / "run.json").read_text())["steps"] == 8


def test_everything_fits_trains_the_recipes_steps(tmp_path: Path, steady_machine: list) -> None:
    make_folder(tmp_path, "60")
    result = run_in(tmp_path)
    assert result.exit_code == 0, result.output
    assert f"steps: all {STEPS} steps fit the 60 s budget" in result.stdout
    assert json.loads((run_dir(tmp_path) / "run.json").read_text())["steps"] == STEPS


def test_resuming_keeps_the_steps_chosen_at_the_start(
    tmp_path: Path, steady_machine: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_folder(tmp_path, "0.85")
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "5:SIGINT")
    assert run_in(tmp_path).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    resumed = run_in(tmp_path, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "at step 5 of 8" in resumed.stdout
    assert len(steady_machine) == 1  # timed once, when the run started
    assert json.loads((run_dir(tmp_path) / "run.json").read_text())["steps"] == 8


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_budget_must_be_positive(tmp_path: Path, value: str) -> None:
    make_folder(tmp_path, value)
    result = run_in(tmp_path)
    assert result.exit_code != 0
    assert "training.time_budget_s: must be > 0 seconds or null" in result.output
    assert "Traceback" not in result.output


def test_a_run_of_at_most_one_multiple_is_not_timed(tmp_path: Path, steady_machine: list) -> None:
    """Fewer steps than one multiple are all trained whatever the budget: no steps spent timing."""
    make_folder(tmp_path, "0.001")
    result = run_in(tmp_path, "training.max_steps=4")
    assert result.exit_code == 0, result.output
    assert steady_machine == [] and "steps:" not in result.stdout
    assert json.loads((run_dir(tmp_path) / "run.json").read_text())["steps"] == 4
