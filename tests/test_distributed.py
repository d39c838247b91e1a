"""Training in several processes (DDP, gptf.train.distributed) gives the model one process gives.

Two processes on the CPU (gloo, one thread each, on 127.0.0.1) train the tiny recipe with the
same global batch as one process; the final weights must agree within 3e-5 (the same sums, in
another order). Processes are started two ways: by real ``torchrun`` (what the README says), and
directly with the environment torchrun would give them (RANK, WORLD_SIZE, ... : faster, and it
lets a test send a signal to one rank only). Every process has a timeout: a hang fails the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RECIPE, invoke
from safetensors.torch import load_file
from test_resume import STEPS, make_run_folder, run_dir

from gptf.build.speed import usable_cores
from gptf.errors import GptfError
from gptf.train import distributed
from gptf.train.checkpoint import latest_checkpoint
from gptf.train.distributed import World, oversubscription_note, world_from_environment

TIMEOUT = 180  # seconds for one launch; a run takes a few
# The same sums in another order differ by rounding only (measured: 1.1e-5 with the teacher's weighted
# answer start, training.answer_start_weight); a loss divided by one process's weights only: 2.7e-2.
TOLERANCE = 3e-5


# ------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "COLUMNS": "160", **extra}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def launch(args: list[str], cwd: Path, size: int = 2, **extra: str) -> list[subprocess.CompletedProcess]:
    """``size`` processes of ``gptf`` with the environment torchrun gives its workers."""
    port = str(free_port())
    processes = []
    for rank in range(size):
        env = child_env(**extra)
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(size),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "gptf", *args],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"rank {len(results)} of {size} did not finish in {TIMEOUT}s (a hang?)")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def torchrun(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 -m gptf ARGS``, as the README says."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gptf"]
    return subprocess.run(
        command + args, cwd=cwd, env=child_env(**extra), capture_output=True, text=True, timeout=TIMEOUT
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir(folder) / "model.safetensors")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def losses(folder: Path) -> dict[int, float]:
    lines = (run_dir(folder) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe (with the trouble plugin, doing nothing) trained by one process."""
    folder = tmp_path_factory.mktemp("one_process")
    recipe = make_run_folder(folder)
    old = Path.cwd()
    os.chdir(folder)
    try:
        result = invoke(["run", recipe.name])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The same recipe trained by torchrun with two processes."""
    folder = tmp_path_factory.mktemp("two_processes")
    recipe = make_run_folder(folder)
    result = torchrun(["run", recipe.name], folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, result


# ------------------------------------------------------------------------------- tests


def test_one_process_is_not_distributed() -> None:
    assert world_from_environment({}) == World()
    assert world_from_environment({"WORLD_SIZE": "1", "RANK": "0"}) == World()  # torchrun with one process
    world = world_from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (world.rank, world.size, world.local_rank, world.local_size) == (3, 4, 1, 2)
    assert world.distributed and not world.is_main
    with pytest.raises(GptfError, match="RANK"):
        world_from_environment({"WORLD_SIZE": "2"})


def test_the_ranks_share_each_batch_exactly_and_evenly() -> None:
    lengths = [5, 90, 7, 60, 33, 12, 80, 41]
    indices = [6, 1, 3, 0, 2, 7, 5, 4]
    one = World()
    assert one.share(indices, lengths) == indices  # one process: all of them, order unchanged
    parts = [World(rank=r, size=2).share(indices, lengths) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(indices)
    assert len(parts[0]) == len(parts[1]) == 4
    tokens = [sum(lengths[i] for i in part) for part in parts]
    assert abs(tokens[0] - tokens[1]) <= max(lengths) - min(lengths)  # dealt like cards: balanced
    with pytest.raises(GptfError, match="cannot be shared equally by 3"):
        World(rank=0, size=3).check_batch(16)


def test_more_threads_than_cores_is_noticed() -> None:
    cores = usable_cores()
    assert oversubscription_note(World(rank=0, size=2, local_size=1), threads=1) is None
    assert "slow each other down" in (oversubscription_note(World(rank=0, size=2, local_size=2), cores) or "")
    assert oversubscription_note(World(), threads=cores) is None  # one process: one thread per core is fine
    one = oversubscription_note(World(), threads=cores + 1) or ""
    assert one.startswith(f"{cores + 1} threads on {cores} cores") and f"training.threads={cores}" in one


def test_a_run_with_more_threads_than_cores_warns(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only under torchrun: one process with more threads than cores is warned too."""
    monkeypatch.setattr(distributed, "usable_cores", lambda: 1)
    before = torch.get_num_threads()
    try:
        result = invoke(["run", str(TINY_RECIPE), "training.threads=2", "training.max_steps=2", "demo_prompts=[]"])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert "warning: 2 threads on 1 core: they will slow each other down (set training.threads=1)" in result.stdout


def test_torchrun_with_two_processes_matches_one_process(
    one_process: Path, two_processes: tuple[Path, subprocess.CompletedProcess]
) -> None:
    folder, result = two_processes
    difference = max_difference(weights(folder), weights(one_process))
    assert difference < TOLERANCE, f"weights differ by {difference}"
    ours, theirs = losses(folder), losses(one_process)
    assert ours.keys() == theirs.keys()
    assert all(abs(ours[s] - theirs[s]) < 1e-4 for s in ours)
    # one run folder, written once: rank 0 alone printed and wrote
    assert result.stdout.count("summary") == 1 and result.stdout.count("parameters:") == 1
    assert "distributed: 2 processes (gloo, cpu), each 4 of the 8 samples" in result.stdout
    assert not (run_dir(folder) / "state").exists()
    assert json.loads((run_dir(folder) / "run.json").read_text())["steps"] == STEPS


def test_a_signal_to_one_rank_stops_all_after_the_same_step_and_resume_is_exact(
    tmp_path: Path, two_processes: tuple[Path, subprocess.CompletedProcess]
) -> None:
    """SIGTERM reaches rank 1 only, at step 5: both stop after step 5, rank 0 saves one
    checkpoint and says how to continue; resuming in two processes gives the weights of the
    uninterrupted two-process run bit for bit."""
    make_run_folder(tmp_path)
    rank0, rank1 = launch(["run", "r.yaml"], tmp_path, GPTF_TEST_SIGNAL_AT="5:SIGTERM", GPTF_TEST_SIGNAL_RANK="1")
    assert rank0.returncode == 130, rank0.stderr
    assert f"training interrupted at step 5 of {STEPS}" in rank0.stderr
    assert "continue with: gptf run r.yaml --resume" in rank0.stderr
    assert rank1.returncode == 0 and rank1.stdout == "", rank1.stderr  # rank 0 speaks for the run
    assert latest_checkpoint(run_dir(tmp_path)).step == 5
    assert latest_checkpoint(run_dir(tmp_path)).manifest["world_size"] == 2

    rank0, rank1 = launch(["run", "r.yaml", "--resume"], tmp_path)
    assert rank0.returncode == 0 and rank1.returncode == 0, rank0.stderr + rank1.stderr
    assert "at step 5 of 12" in rank0.stdout
    reference, _ = two_processes
    assert (run_dir(tmp_path) / "model.safetensors").read_bytes() == (
        run_dir(reference) / "model.safetensors"
    ).read_bytes()


def test_a_nan_loss_stops_every_rank(tmp_path: Path) -> None:
    make_run_folder(tmp_path)
    (tmp_path / "nan.yaml").write_text("extends: r.yaml\ntraining: {callbacks: [{name: poison_at, step: 3}]}\n")
    rank0, rank1 = launch(["run", "nan.yaml"], tmp_path)
    assert rank0.returncode == 3, rank0.stderr
    assert "training stopped at step 4" in rank0.stderr
    assert rank1.returncode == 0 and "Traceback" not in rank1.stderr


def test_ctrl_c_to_torchrun_saves_one_checkpoint(tmp_path: Path) -> None:
    """Ctrl+C reaches torchrun's agent (its workers run in sessions of their own); it passes
    SIGINT on to every worker, and they stop together after a step, rank 0 saving."""
    make_run_folder(tmp_path)
    result = torchrun(  # long enough that the signal arrives while training
        ["run", "r.yaml", "training.max_steps=3000", "training.eval_interval=5000"],
        tmp_path,
        GPTF_TEST_SIGNAL_AT="3:SIGINT",
        GPTF_TEST_SIGNAL_RANK="0",
        GPTF_TEST_SIGNAL_PARENT="1",
    )
    assert result.returncode != 0
    assert "training interrupted at step" in result.stderr, result.stderr
    checkpoint = latest_checkpoint(run_dir(tmp_path))
    assert checkpoint is not None and 3 <= checkpoint.step < 3000
    assert len(list((run_dir(tmp_path) / "state").iterdir())) == 1
