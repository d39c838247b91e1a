"""Interrupt and resume: Ctrl+C, SIGTERM and kill -9 lose nothing, and resuming is exact.

Every test trains the tiny recipe with 1 thread in fp32 and compares the final weights of
an interrupted-then-resumed run with those of an uninterrupted run, byte for byte.
Interruptions are made deterministic by a test plugin (tests/fixtures/trouble_plugin.py)
whose callback sends the process a real signal at a chosen step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, TINY_RECIPE, copy_tiny_data, invoke

from gptf.errors import CheckpointError
from gptf.train.checkpoint import find_checkpoint, incomplete_saves, latest_checkpoint, verify_files

TROUBLE = FIXTURES / "trouble_plugin.py"
STEPS = 12


def make_run_folder(folder: Path) -> Path:
    """Tiny data, the trouble plugin and a recipe that uses it, in ``folder``; returns the recipe."""
    folder.mkdir(parents=True, exist_ok=True)
    copy_tiny_data(folder)
    shutil.copy(TROUBLE, folder / "trouble_plugin.py")
    recipe = folder / "r.yaml"
    recipe.write_text(
        f"extends: {TINY_RECIPE}\nplugins: [./trouble_plugin.py]\n"
        f"training: {{max_steps: {STEPS}, callbacks: [signal_at]}}\n"
        "demo_prompts: []\n"
    )
    return recipe


def run_dir(folder: Path) -> Path:
    return folder / "checkpoints" / "tiny"


def metrics_of(folder: Path) -> list[dict]:
    """The logged numbers that must match between runs (not the timings)."""
    keep = ("step", "loss", "lr", "grad_norm", "val_loss")
    lines = (run_dir(folder) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k in keep} for line in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the same recipe (trained once for this file)."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = make_run_folder(folder)
    old = Path.cwd()
    os.chdir(folder)
    try:
        result = invoke(["run", str(recipe.name)])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return folder


def assert_same_as_reference(folder: Path, reference: Path) -> None:
    ours, theirs = run_dir(folder) / "model.safetensors", run_dir(reference) / "model.safetensors"
    assert ours.read_bytes() == theirs.read_bytes(), "resumed weights differ from the uninterrupted run"
    assert metrics_of(folder) == metrics_of(reference)
    assert not (run_dir(folder) / "state").exists(), "a finished run keeps no resumable checkpoints"


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_saves_checkpoint_and_resume_is_bit_identical(
    signal_name: str, workdir: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", f"5:{signal_name}")
    stopped = invoke(["run", "r.yaml"])
    assert stopped.exit_code == 130, stopped.output
    assert f"training interrupted at step 5 of {STEPS}" in stopped.stderr
    assert "continue with: gptf run r.yaml --resume" in stopped.stderr
    assert "Traceback" not in stopped.output
    assert latest_checkpoint(run_dir(workdir)).step == 5
    assert not (run_dir(workdir) / "model.safetensors").exists()  # not finished yet

    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    resumed = invoke(["run", "r.yaml", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.stdout and "at step 5 of 12" in resumed.stdout
    assert_same_as_reference(workdir, reference)


def test_resume_names_the_run_directory(workdir: Path, reference: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "3:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    resumed = invoke(["run", "r.yaml", "--resume", "checkpoints/tiny"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_as_reference(workdir, reference)


def test_a_second_interrupt_after_resuming_also_resumes(
    workdir: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "3:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "8:SIGINT")
    assert invoke(["run", "r.yaml", "--resume"]).exit_code == 130
    assert [p.name for p in (run_dir(workdir) / "state").iterdir()] == ["step-000008"]  # only the newest is kept
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    assert invoke(["run", "r.yaml", "--resume"]).exit_code == 0
    assert_same_as_reference(workdir, reference)


def gptf_process(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gptf", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **env},
    )


def test_kill_9_then_resume_from_periodic_checkpoint(workdir: Path, reference: Path) -> None:
    """A real process is killed with SIGKILL at step 7; the periodic checkpoint of step 6 survives."""
    make_run_folder(workdir)
    process = gptf_process(["run", "r.yaml", "training.save_interval=3"], workdir, GPTF_TEST_SIGNAL_AT="7:SIGKILL")
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    checkpoint = find_checkpoint(run_dir(workdir))
    assert checkpoint.step == 6
    verify_files(checkpoint)
    resumed = invoke(["run", "r.yaml", "training.save_interval=3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "at step 6 of 12" in resumed.stdout
    assert_same_as_reference(workdir, reference)


KILL_DURING_SAVE = """
import os, signal, sys
import gptf.train.checkpoint as resume

saves = {"n": 0}
real_save_torch = resume._save_torch

def dying_save_torch(obj, path):
    if path.name == "optimizer.pt":
        saves["n"] += 1
        if saves["n"] == 2:  # the second checkpoint: write half the optimizer state, then die
            real_save_torch(obj, path)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    real_save_torch(obj, path)

resume._save_torch = dying_save_torch
from gptf.cli import main
sys.argv = ["gptf", "run", "r.yaml", "training.save_interval=4"]
main()
"""


def test_kill_9_in_the_middle_of_a_save_keeps_the_previous_checkpoint(workdir: Path, reference: Path) -> None:
    make_run_folder(workdir)
    process = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE], cwd=workdir, capture_output=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    assert incomplete_saves(run_dir(workdir)), "the cut-off save should have left its temporary folder"
    checkpoint = find_checkpoint(run_dir(workdir))
    assert checkpoint.step == 4  # the half-written step-8 save is never picked
    verify_files(checkpoint)
    resumed = invoke(["run", "r.yaml", "training.save_interval=4", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_as_reference(workdir, reference)
    assert not incomplete_saves(run_dir(workdir))


@pytest.mark.slow
def test_kill_9_at_random_moments_always_leaves_a_loadable_checkpoint(workdir: Path) -> None:
    """Kill a process that saves after every step at a random moment, resume, kill again: the
    newest complete checkpoint must always pass its sha256 checks and load."""
    make_run_folder(workdir)
    rng = random.Random(5)
    state = run_dir(workdir) / "state"
    args = ["run", "r.yaml", "training.save_interval=1", "training.max_steps=400", "training.eval_interval=1000"]
    reached = 0
    for attempt in range(2):
        process = gptf_process(args + (["--resume"] if attempt else []), workdir)
        deadline = time.monotonic() + 60
        while (found := latest_checkpoint(run_dir(workdir))) is None or found.step < reached + 2:
            assert process.poll() is None and time.monotonic() < deadline, "the run should be saving checkpoints"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        process.kill()
        process.communicate(timeout=60)
        checkpoint = find_checkpoint(run_dir(workdir))
        verify_files(checkpoint)
        optimizer_state = torch.load(checkpoint.file("optimizer.pt"), weights_only=True)
        assert optimizer_state["state"], "a complete checkpoint has the optimizer's moments"
        assert len([p for p in state.iterdir() if p.name.startswith("step-")]) <= 2
        assert checkpoint.step >= reached
        reached = checkpoint.step


def test_changed_recipe_is_refused_with_the_keys_then_forced(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "4:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    refused = invoke(["run", "r.yaml", "training.lr=0.01", "model.norm=layernorm", "--resume"])
    assert refused.exit_code == 2
    assert "2 setting(s) differ" in refused.stderr
    assert "training.lr: 0.003 (checkpoint) -> 0.01 (now)" in refused.stderr
    assert "model.norm: rmsnorm (checkpoint) -> layernorm (now)" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.output
    # settings that do not change what is learned may differ
    allowed = invoke(["run", "r.yaml", "training.lr=0.01", "--resume", "--force", "training.log_interval=1"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning (--force): training.lr" in allowed.stdout


def test_changed_data_is_refused(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "4:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    with open(workdir / "tiny_train.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"prompt": "新问题", "completion": "新答案。"}\n')
    refused = invoke(["run", "r.yaml", "--resume"])
    assert refused.exit_code == 2
    assert "data.train: tiny_train.jsonl changed since the checkpoint" in refused.stderr


def test_changed_tokenizer_is_refused_and_the_copy_is_named(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "4:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    tokenizer = workdir / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    data["model"]["vocab"]["zzzz"] = len(data["model"]["vocab"])
    tokenizer.write_text(json.dumps(data))
    refused = invoke(["run", "r.yaml", "training.log_interval=1", "--resume"])
    assert refused.exit_code == 2, refused.output
    assert "the tokenizer differs" in refused.stderr
    assert "state/step-000004/tokenizer.json" in refused.stderr  # how to put it back


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(workdir: Path) -> None:
    """Weights poisoned with NaN at the end of step 4: that step is not saved over the good
    checkpoint of step 2, and step 5's NaN loss stops training."""
    make_run_folder(workdir)
    args = ["run", "r.yaml", "training.save_interval=2", "training.callbacks=[{name: poison_at, step: 4}]"]
    stopped = invoke(args)
    assert stopped.exit_code == 3, stopped.output
    assert "training stopped at step 5: the loss is nan" in stopped.stderr
    assert "not saving step 4" in stopped.stdout
    assert "the last good checkpoint (step 2) is kept" in stopped.stderr
    checkpoint = latest_checkpoint(run_dir(workdir))
    assert checkpoint is not None and checkpoint.step == 2
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(checkpoint.file("model.safetensors")).values())


def test_huge_learning_rate_stops_with_the_step(workdir: Path) -> None:
    make_run_folder(workdir)
    stopped = invoke(["run", "r.yaml", "training.lr=1e30", "training.grad_clip=0", "training.save_interval=1"])
    assert stopped.exit_code == 3, stopped.output
    assert "training stopped at step" in stopped.stderr and "lower training.lr" in stopped.stderr
    assert "Traceback" not in stopped.output


def test_resume_when_there_is_nothing_to_resume(workdir: Path) -> None:
    make_run_folder(workdir)
    missing = invoke(["run", "r.yaml", "--resume"])
    assert missing.exit_code == 2
    assert "cannot resume: run directory not found: checkpoints/tiny" in missing.stderr
    assert invoke(["run", "r.yaml"]).exit_code == 0
    finished = invoke(["run", "r.yaml", "--resume"])
    assert finished.exit_code == 2
    assert "has no complete checkpoint (the run finished" in finished.stderr


def test_corrupt_checkpoint_file_is_named(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "4:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    optimizer = run_dir(workdir) / "state" / "step-000004" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    result = invoke(["run", "r.yaml", "--resume"])
    assert result.exit_code == 2
    assert f"{Path('checkpoints/tiny/state/step-000004/optimizer.pt')}: corrupt" in result.stderr
    with pytest.raises(CheckpointError, match="not a readable PyTorch state file"):
        from gptf.train.checkpoint import load_torch_file

        load_torch_file(optimizer)


def test_fresh_run_over_a_checkpoint_says_how_to_continue_it(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run_folder(workdir)
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "4:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    fresh = invoke(["run", "r.yaml"])
    assert fresh.exit_code == 0, fresh.output
    assert "holds a resumable checkpoint (step 4)" in fresh.stdout and "--resume" in fresh.stdout
    assert latest_checkpoint(run_dir(workdir)) is None  # finished: nothing left to resume


def test_fresh_run_over_a_finished_run_says_it_will_replace_it(workdir: Path) -> None:
    make_run_folder(workdir)
    assert invoke(["run", "r.yaml"]).exit_code == 0
    before = (run_dir(workdir) / "run.json").stat().st_mtime_ns
    again = invoke(["run", "r.yaml"])
    assert again.exit_code == 0, again.output
    assert "holds a finished run (" in again.stdout and "replaces it when it finishes" in again.stdout
    assert "name=" in again.stdout  # how to keep it
    assert (run_dir(workdir) / "run.json").stat().st_mtime_ns > before  # and it did replace it (written again)


def test_an_interrupted_new_run_leaves_the_finished_runs_files_as_they_were(
    workdir: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until the new run is saved, the finished run in its folder keeps its weights *and* its metrics:
    the new run logs to metrics.in-progress.jsonl, which becomes metrics.jsonl when it is saved."""
    make_run_folder(workdir)
    folder = run_dir(workdir)
    assert invoke(["run", "r.yaml", "training.lr=0.002"]).exit_code == 0  # another run, other numbers
    kept = {name: (folder / name).read_bytes() for name in ("model.safetensors", "metrics.jsonl", "run.json")}
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "5:SIGINT")
    assert invoke(["run", "r.yaml"]).exit_code == 130
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    in_progress = (folder / "metrics.in-progress.jsonl").read_text().splitlines()
    assert in_progress and json.loads(in_progress[-1])["step"] <= 5
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    assert invoke(["run", "r.yaml", "--resume"]).exit_code == 0
    assert not (folder / "metrics.in-progress.jsonl").exists()
    assert_same_as_reference(workdir, reference)  # weights and metrics.jsonl: the new run's, as if uninterrupted
