"""Training speed: the original release's step (naive) vs gptf's, side by side in one process.

    python benchmarks/train_speed.py                      # ~2-4 minutes on 2 cores
    python benchmarks/train_speed.py --steps 50 --variants naive gptf gptf_mb16 gptf_bf16_mb16

One optimizer step is the teacher recipe's work: 16 samples. The naive step pads every row
to 128 tokens and uses explicit masked attention, fp32, 4 micro-batches of 4 (see
naive_reference.py). Each contender first runs ``--warmup`` steps (untimed; with
``training.compile`` this is where compiling happens, reported as ``warmup_s``), then they
take turns, ``--chunk`` steps at a time, so a busy neighbour slows all of them alike.

Useful work is counted as 6 · parameters · real (non-padding) tokens, the FLOPs of the
forward and backward pass a perfect implementation would do, and compared with the GEMM
peak measured at the start of the same run.

gptf's trainer asks glibc to keep freed memory for reuse (gptf.build.allocator), which is a
setting of the whole process: the naive contender, in the same process, gets it too, so the
ratios here leave that gain out (the whole-run comparison in suite.py, separate processes, has it).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_common import (
    Dataset,
    emit,
    gemm_peak_gflops,
    gptf_trainer,
    interleaved,
    machine,
    our_data,
    peer_data,
    set_threads,
    summary,
)
from naive_reference import NaiveConfig, NaiveTrainer, encode_original

GPTF_VARIANTS: dict[str, list[str]] = {
    "gptf": [],  # the teacher recipe as shipped (micro-batch 4, precision auto, micro-batches side by side)
    "gptf_one_at_a_time": ["training.side_by_side=false"],  # the micro-batches one after the other
    "gptf_fp32": ["training.precision=fp32"],
    "gptf_mb4_fp32": ["training.micro_batch=4", "training.precision=fp32"],  # the previous default
    "gptf_mb16": ["training.micro_batch=16"],
    "gptf_mb8": ["training.micro_batch=8"],
    "gptf_explicit_mb8": ["training.micro_batch=8", "model.attention=explicit"],
    "gptf_bf16": ["training.precision=bf16"],
    "gptf_bf16_mb16": ["training.precision=bf16", "training.micro_batch=16"],
    "gptf_bucketed_bf16_mb16": ["training.precision=bf16", "training.micro_batch=16", "training.bucket_batches=8"],
    "gptf_bucketed": ["training.bucket_batches=8"],
    "gptf_unweighted": ["training.answer_start_tokens=0"],  # every answer token counts once (before the weighting)
    "gptf_compile": ["training.compile=true"],
    "gptf_compile_bf16_mb16": ["training.compile=true", "training.precision=bf16", "training.micro_batch=16"],
    "gptf_explicit_attention": ["model.attention=explicit"],
    "gptf_unfused_adamw": ["training.optimizer.fused=false"],
}
DEFAULT_VARIANTS = ["naive", "gptf", "gptf_mb16", "gptf_bf16_mb16"]
TEACHER_STEPS = 2000  # the original release's run, for the projection


class Contender:
    """One way of training: a step function and how many real tokens it has consumed."""

    def __init__(self, name: str, step: Callable[[], Any], tokens: Callable[[], int], params: int) -> None:
        self.name, self.step, self.tokens, self.params = name, step, tokens, params


def naive_contender(data: Dataset) -> Contender:
    config = NaiveConfig(vocab_size=data.tokenizer.vocab_size)
    examples = [encode_original(data.tokenizer, s, config.seq_len) for s in data.train]
    trainer = NaiveTrainer(config, examples, data.tokenizer.pad_id)
    params = sum(p.numel() for p in trainer.model.parameters())
    return Contender("naive", trainer.train_step, lambda: trainer.real_tokens, params)


def gptf_contender(name: str, data: Dataset) -> Contender:
    setup = gptf_trainer(data, GPTF_VARIANTS[name])
    trainer = setup.trainer
    params = sum(p.numel() for p in trainer.model.parameters())
    return Contender(name, trainer.train_step, lambda: trainer.state.tokens_seen, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per contender (default 30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first (default 2)")
    parser.add_argument("--chunk", type=int, default=5, help="steps per turn when interleaving (default 5)")
    parser.add_argument("--data", choices=["ours", "peer"], default="ours", help="data and tokenizer (default ours)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        choices=["naive", *GPTF_VARIANTS],
        help=f"contenders (default: {' '.join(DEFAULT_VARIANTS)})",
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    data = our_data() if args.data == "ours" else peer_data()
    if data is None:
        emit({"benchmark": "train_speed", "skipped": "the peer data (../shared/peer/gpt_teacher_seed) is absent"})
        return
    peaks = {"fp32": gemm_peak_gflops(torch.float32), "bf16": gemm_peak_gflops(torch.bfloat16)}

    contenders = [naive_contender(data) if v == "naive" else gptf_contender(v, data) for v in args.variants]
    warmup_s: dict[str, float] = {}
    for c in contenders:
        started = time.perf_counter()
        for _ in range(args.warmup):
            c.step()
        warmup_s[c.name] = time.perf_counter() - started
    tokens_before = {c.name: c.tokens() for c in contenders}
    rounds = math.ceil(args.steps / args.chunk)
    seconds = interleaved({c.name: c.step for c in contenders}, rounds, args.chunk)

    results: dict[str, dict[str, Any]] = {}
    for c in contenders:
        times = seconds[c.name]
        step_s = sorted(times)[len(times) // 2]
        tokens_per_step = (c.tokens() - tokens_before[c.name]) / len(times)
        useful_gflops = 6 * c.params * tokens_per_step / step_s / 1e9
        results[c.name] = {
            **summary(times),
            "steps_timed": len(times),
            "steps_per_s": round(1 / step_s, 2),
            "real_tokens_per_step": round(tokens_per_step, 1),
            "real_tokens_per_s": round(tokens_per_step / step_s),
            "useful_gflops": round(useful_gflops, 1),
            "pct_of_fp32_peak": round(100 * useful_gflops / peaks["fp32"], 1),
            "pct_of_bf16_peak": round(100 * useful_gflops / peaks["bf16"], 1),
            f"projected_{TEACHER_STEPS}_steps_s": round(step_s * TEACHER_STEPS, 1),
            "warmup_s": round(warmup_s[c.name], 2),
        }
    if "naive" in results:
        naive_ms = results["naive"]["median_ms"]
        for r in results.values():
            r["speedup_vs_naive"] = round(naive_ms / r["median_ms"], 2)
    emit(
        {
            "benchmark": "train_speed",
            "command": " ".join(["python benchmarks/train_speed.py", *sys.argv[1:]]),
            "data": data.name,
            "samples_per_step": 16,
            "parameters": contenders[0].params,
            "gemm_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
            "machine": {**machine(), "threads": threads},
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
