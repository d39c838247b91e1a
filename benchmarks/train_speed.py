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
peak measured in the same run (at the start, and again in turns with the contenders: the higher
of the two). The contender ``gemm_floor`` times only the
matrix products of gptf's steps (see gemm_floor_contender): the fastest a step could be here.

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
from concurrent.futures import ThreadPoolExecutor
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

from gptf.build.speed import one_pytorch_thread
from gptf.data import micro_batches, step_samples
from gptf.train.side_by_side import deal

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
    "gptf_compile_mb16": ["training.compile=true", "training.micro_batch=16"],  # compiled, all 16 samples at once
    "gptf_compile_bf16_mb16": ["training.compile=true", "training.precision=bf16", "training.micro_batch=16"],
    "gptf_explicit_attention": ["model.attention=explicit"],
    "gptf_unfused_adamw": ["training.optimizer.fused=false"],
}
DEFAULT_VARIANTS = ["naive", "gptf", "gptf_mb16", "gptf_bf16_mb16"]
PEAK_N = 1024  # the square matmul whose best rate is "the peak" (bench_common.gemm_peak_gflops)
PEAK_PROBE = "(fp32 GEMM peak)"  # its turn among the contenders
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


def gemm_floor_contender(data: Dataset, name: str = "gemm_floor") -> Contender:
    """The matrix products of gptf's own steps and nothing else: a floor for its step time.

    The same micro-batches as ``gptf`` (the same rows, padded the same way), dealt to the same
    workers, each with one PyTorch thread; for every linear layer (q/k/v, attention output, MLP in
    and out, the output layer) the forward product and the two of the backward pass (the input's
    gradient and the weights'). That is the "useful work" below (6 FLOPs per weight and row), on
    the padded rows gptf computes; no norm, activation, attention, loss, optimizer or Python. So
    its % of the peak is the most an implementation of this model and batch layout can reach on
    this CPU with PyTorch's GEMMs, and its ms/step the least a step can take.

    ``gemm_floor_mb16``: the same for another layout, all 16 samples in one micro-batch (bigger
    matrices) computed with all of PyTorch's threads, one product after the other."""
    setup = gptf_trainer(data, ["training.micro_batch=16"] if name == "gemm_floor_mb16" else [])
    trainer = setup.trainer
    model = trainer.model
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = {shape: torch.randn(shape[1], shape[0]) for shape in set(shapes)}  # (out, in), like nn.Linear
    most_rows = trainer.config.micro_batch * model.config.seq_len
    # inputs and output gradients made once: the first ``rows`` rows of each are a contiguous matrix
    dims = {d for shape in shapes for d in shape}
    values = {d: torch.randn(most_rows, d) for d in dims}
    workers = setup.trainer.side_by_side.workers  # as gptf computes them: 1 = one after the other
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    state = {"step": 0, "tokens": 0}

    def products(rows: int) -> None:
        for fan_in, fan_out in shapes:
            w = weights[(fan_in, fan_out)]
            x, grad_y = values[fan_in][:rows], values[fan_out][:rows]
            x @ w.t()  # forward
            grad_y @ w  # backward: the input's gradient
            grad_y.t() @ x  # backward: the weights' gradient

    def step() -> None:
        cfg = trainer.config
        indices = step_samples(trainer.lengths, cfg.seed, state["step"], cfg.batch_size, cfg.bucket_batches)
        batches = micro_batches(
            trainer.train_split, indices, cfg.micro_batch, trainer.pad_id, trainer.pad_multiple, model.config.seq_len
        )
        rows = [x.numel() for x, _ in batches]

        def work(hand: list[int]) -> None:
            # A new thread's own OpenMP setting starts at every core, and a bare matmul (unlike the
            # model's first operations) does not set it from PyTorch's: without this each worker's
            # GEMMs started a team of OpenMP threads, and the naive contender ran 2x slower after them.
            torch.set_num_threads(1)
            for i in hand:
                products(rows[i])

        if pool is None:
            for count in rows:
                products(count)
        else:
            with one_pytorch_thread():
                for future in [pool.submit(work, hand) for hand in deal(len(rows), workers)]:
                    future.result()
        state["step"] += 1
        state["tokens"] += sum(len(trainer.train_split.inputs[i]) for i in indices)

    params = sum(p.numel() for p in model.parameters())
    return Contender(name, step, lambda: state["tokens"], params)


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
        choices=["naive", "gemm_floor", "gemm_floor_mb16", *GPTF_VARIANTS],
        help=f"contenders (default: {' '.join(DEFAULT_VARIANTS)})",
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    data = our_data() if args.data == "ours" else peer_data()
    if data is None:
        emit({"benchmark": "train_speed", "skipped": "the peer data (../shared/peer/gpt_teacher_seed) is absent"})
        return
    peaks = {"fp32": gemm_peak_gflops(torch.float32), "bf16": gemm_peak_gflops(torch.bfloat16)}

    special: dict[str, Callable[[Dataset], Contender]] = {
        "naive": naive_contender,
        "gemm_floor": gemm_floor_contender,
        "gemm_floor_mb16": lambda d: gemm_floor_contender(d, "gemm_floor_mb16"),
    }
    contenders = [special[v](data) if v in special else gptf_contender(v, data) for v in args.variants]
    warmup_s: dict[str, float] = {}
    for c in contenders:
        started = time.perf_counter()
        for _ in range(args.warmup):
            c.step()
        warmup_s[c.name] = time.perf_counter() - started
    tokens_before = {c.name: c.tokens() for c in contenders}
    rounds = math.ceil(args.steps / args.chunk)
    # The peak again, in turns with the contenders: this machine's speed drifts (the start-up
    # measurement alone ranged 260-345 GFLOP/s over one day), and a peak measured in a slow
    # moment would flatter every "% of peak". The higher of the two is the one used.
    square = torch.randn(PEAK_N, PEAK_N), torch.randn(PEAK_N, PEAK_N)
    turns = {c.name: c.step for c in contenders} | {PEAK_PROBE: lambda: square[0] @ square[1]}
    seconds = interleaved(turns, rounds, args.chunk)
    peak_in_turns = 2 * PEAK_N**3 / min(seconds.pop(PEAK_PROBE)) / 1e9
    peak_at_start = peaks["fp32"]
    peaks["fp32"] = max(peak_at_start, peak_in_turns)

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
            "fp32_peak_at_start_and_in_turns": [round(peak_at_start, 1), round(peak_in_turns, 1)],
            "machine": {**machine(), "threads": threads},
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
