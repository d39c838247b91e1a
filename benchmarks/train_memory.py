"""Peak memory (RSS) of training: each contender trains in a fresh child process.

    python benchmarks/train_memory.py                     # ~1 minute
    python benchmarks/train_memory.py --steps 50 --variants naive gptf gptf_mb16

The peak resident set size of a process only ever grows, so every contender runs alone in its
own ``python`` child that imports everything, builds the model, trains ``--steps`` steps and
evaluates once, then reports ``ru_maxrss``. ``baseline_mb`` is the same child's peak right
after the imports (Python + PyTorch + gptf, before any model exists): the part no training
setting can change.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_common import emit, machine

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def child(variant: str, steps: int, data_name: str) -> None:
    """Runs in the child process: train, evaluate, print one JSON line."""
    baseline = peak_rss_mb()
    from bench_common import gptf_trainer, our_data, peer_data
    from train_speed import GPTF_VARIANTS, naive_contender

    data = our_data() if data_name == "ours" else peer_data()
    if data is None:
        print(json.dumps({"skipped": "peer data absent"}))
        return
    if variant == "naive":
        step = naive_contender(data).step
        evaluate = None
    else:
        trainer = gptf_trainer(data, GPTF_VARIANTS[variant]).trainer
        step, evaluate = trainer.train_step, trainer.evaluate
    for _ in range(steps):
        step()
    if evaluate is not None:
        evaluate()
    print(json.dumps({"baseline_mb": round(baseline, 1), "peak_mb": round(peak_rss_mb(), 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", choices=["ours", "peer"], default="ours")
    parser.add_argument("--variants", nargs="+", default=["naive", "gptf", "gptf_mb16", "gptf_bf16_mb16"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.data)
        return
    results: dict[str, Any] = {}
    for variant in args.variants:
        command = [sys.executable, str(HERE / "train_memory.py"), "--child", variant, "--steps", str(args.steps)]
        done = subprocess.run([*command, "--data", args.data], capture_output=True, text=True, cwd=HERE.parent)
        if done.returncode != 0:
            results[variant] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    emit(
        {
            "benchmark": "train_memory",
            "command": " ".join(["python benchmarks/train_memory.py", *sys.argv[1:]]),
            "data": args.data,
            "steps": args.steps,
            "machine": machine(),
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
