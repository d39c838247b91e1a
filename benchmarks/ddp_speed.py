"""Two processes or two threads? The teacher recipe trained by torchrun with N processes x 1 thread
against one process with N threads (and one process with 1 thread), the same global batch.

    python benchmarks/ddp_speed.py                       # 100 steps each, 2 rounds: ~10 minutes on 2 cores
    python benchmarks/ddp_speed.py --steps 50 --rounds 1 --nproc 2

Each configuration is a real ``gptf run`` (through ``torchrun`` for the processes; this script's
``--worker`` mode, which skips the greedy val answers at the end), into a run folder of its own
under ``--out``. The configurations take turns (round 1: all of them, round 2:
all of them again, ...), so a busy neighbour slows all alike; the median is reported. Speed is
``tokens_seen / train_seconds`` from each run's ``run.json``: training steps only (not the start,
the demo answers or the val evaluation). The weights of the first run of each configuration are
compared with those of the one-process run: the same batches, summed in another order.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import ROOT, emit, machine
from safetensors.torch import load_file

RECIPE = ROOT / "recipes" / "teacher_3m.yaml"


def configurations(nproc: int) -> dict[str, dict[str, Any]]:
    return {
        f"{nproc}_processes_x_1_thread": {"processes": nproc, "threads": 1},
        f"1_process_x_{nproc}_threads": {"processes": 1, "threads": nproc},
        "1_process_x_1_thread": {"processes": 1, "threads": 1},
    }


def command(processes: int, threads: int, steps: int, out: Path) -> list[str]:
    launcher = [sys.executable]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    overrides = [f"training.max_steps={steps}", f"training.threads={threads}", f"output_dir={out}"]
    overrides += ["training.save_interval=0", f"training.eval_interval={steps}", "demo_prompts=[]"]
    return [*launcher, __file__, "--worker", str(RECIPE), *overrides]


def worker(recipe: str, overrides: list[str]) -> None:
    """``gptf run`` without the greedy val answers at the end (they are not what is measured)."""
    from rich.console import Console

    from gptf.recipe import load_recipe
    from gptf.run import run_recipe
    from gptf.train.distributed import launched_world

    with launched_world("cpu") as world:
        console = Console() if world.is_main else Console(quiet=True)
        run_recipe(load_recipe(recipe, overrides), console, device="cpu", final_eval=False, world=world)


def run_once(processes: int, threads: int, steps: int, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(command(processes, threads, steps, out), cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    info = json.loads((out / "run.json").read_text())
    return {
        "tokens_per_s": info["tokens_seen"] / info["train_seconds"],
        "train_seconds": info["train_seconds"],
        "wall_seconds": time.perf_counter() - started,
        "final_train_loss": info["final_train_loss"],
        "final_val_loss": info["final_val_loss"],
    }


def max_difference(a: Path, b: Path) -> float:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2, help="processes (and threads) to compare")
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints" / "bench_ddp")
    args = parser.parse_args()
    configs = configurations(args.nproc)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for round_number in range(args.rounds):
        for name, c in configs.items():
            folder = args.out / f"{name}_round{round_number}"
            runs[name].append(run_once(c["processes"], c["threads"], args.steps, folder))
            print(f"{name} round {round_number}: {runs[name][-1]['tokens_per_s']:,.0f} tok/s", file=sys.stderr)
    reference = args.out / f"1_process_x_{args.nproc}_threads_round0"
    result = {"machine": machine(), "recipe": str(RECIPE.relative_to(ROOT)), "steps": args.steps, "results": {}}
    for name, measured in runs.items():
        result["results"][name] = {
            "tokens_per_s_median": round(statistics.median(r["tokens_per_s"] for r in measured)),
            "tokens_per_s_each": [round(r["tokens_per_s"]) for r in measured],
            "final_train_loss": measured[0]["final_train_loss"],
            "final_val_loss": measured[0]["final_val_loss"],
            "max_weight_difference_vs_1_process_x_n_threads": max_difference(args.out / f"{name}_round0", reference),
        }
    emit(result)


if __name__ == "__main__":
    main()
