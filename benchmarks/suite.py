"""The whole speed suite in one command, as one Markdown table (the README's speed section).

    python benchmarks/suite.py                   # ~15-25 minutes on 2 busy cores
    python benchmarks/suite.py --quick           # fewer repeats and steps, a few minutes
    python benchmarks/suite.py --threads 1       # on a machine shared with other jobs

It runs, each in its own process (contenders inside one process, side by side, interleaved):

* generation_speed.py: batch-1 greedy answers, KV cache (eager and compiled) vs the original's
  full recompute, twice: random weights at a fixed length, and a trained run (``--ckpt``, default
  checkpoints/teacher_3m) answering the held-out val questions, where draft and verify (eager and
  compiled) and beam search join in;
* train_speed.py: one optimizer step of the teacher recipe vs the naive reference, with the
  fp32 GEMM peak measured in the same process, and the step's matrix products timed alone
  (``gemm_floor``: the fastest a step of this model and batch layout could be on this CPU);
* a whole run: ``gptf run`` (start-up, data, training, checkpoints, int8, demo answers, greedy
  answers to the val questions) vs the original's way of doing the same work (this file's
  ``--naive-run``), both for ``--run-steps`` steps, alternating so the load hits both alike;
* train_memory.py: peak RSS of a training process;
* ``training.precision: auto``: what it picks here, and why.

Ratios are what to compare across machines; absolute numbers depend on the CPU and on the load
(reported: the 1-minute load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16", "asimd", "sve")


def run_json(script: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / script), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{script} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - started


def naive_run(steps: int, eval_interval: int) -> None:
    """The original release's whole run, on our data: train ``steps`` steps (val loss every
    ``eval_interval``), save, demo answers, then greedy answers to every val question, all by
    full recompute. Started as its own process, like ``gptf run``."""
    sys.path.insert(0, str(HERE))
    import torch
    from bench_common import our_data, teacher_recipe
    from naive_reference import NaiveConfig, NaiveTrainer, encode_original, naive_generate

    from gptf.data import format_prompt

    data = our_data()
    config = NaiveConfig(vocab_size=data.tokenizer.vocab_size, max_steps=steps)
    train = [encode_original(data.tokenizer, s, config.seq_len) for s in data.train]
    val = [encode_original(data.tokenizer, s, config.seq_len) for s in data.val]
    trainer = NaiveTrainer(config, train, data.tokenizer.pad_id)
    for step in range(1, steps + 1):
        trainer.train_step()
        if step % eval_interval == 0 or step == steps:
            trainer.original_val_loss(val)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(trainer.model.state_dict(), Path(folder) / "model.pt")
    trainer.model.eval()
    prompts = list(teacher_recipe().demo_prompts) + [s.prompt for s in data.val]
    tok = data.tokenizer
    for prompt in prompts:
        ids = [tok.bos_id, *tok.encode(format_prompt(prompt))][: config.seq_len - 1]
        new, _ = naive_generate(trainer.model, ids, min(64, config.seq_len - len(ids)))
        if tok.eos_id in new:
            new = new[: new.index(tok.eos_id)]


def whole_runs(steps: int, repeats: int, threads: int | None) -> dict[str, Any]:
    eval_interval = max(1, steps // 2)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    results: dict[str, list[float]] = {"naive": [], "gptf": []}
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        overrides = [
            f"training.max_steps={steps}",
            f"training.eval_interval={eval_interval}",
            f"training.save_interval={eval_interval}",
            f"output_dir={run_dir}",
        ]
        if threads:
            overrides.append(f"training.threads={threads}")
        gptf = [sys.executable, "-m", "gptf", "run", "recipes/teacher_3m.yaml", *overrides]
        naive = [sys.executable, str(HERE / "suite.py"), "--naive-run", str(steps), str(eval_interval)]
        naive_env = {**env, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        for _ in range(repeats):  # alternating, so a busy neighbour slows both alike
            results["naive"].append(timed(naive, naive_env))
            shutil.rmtree(run_dir, ignore_errors=True)
            results["gptf"].append(timed(gptf, env))
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    best = {k: min(v) for k, v in results.items()}
    return {"steps": steps, "seconds": best, "precision": record.get("precision")}


def machine() -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import torch

    from gptf.build.speed import cpu_flags, cpu_name

    flags = cpu_flags()
    return {
        "cpu": cpu_name(),
        "flags": [f for f in FLAGS if f in flags],
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every contender")
    parser.add_argument("--run-steps", type=int, default=None, help="steps of each whole run (default 60; quick 20)")
    parser.add_argument(
        "--ckpt",
        default="checkpoints/teacher_3m",
        help="a trained run for generation on real questions (skipped if it is not there)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["generation", "training", "run", "memory"])
    parser.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    parser.add_argument("--naive-run", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_run:
        naive_run(*args.naive_run)
        return
    threads = ["--threads", str(args.threads)] if args.threads else []
    load_before = os.getloadavg()[0]
    raw: dict[str, Any] = {"machine": machine()}
    if "generation" not in args.skip:
        raw["generation"] = run_json("generation_speed.py", "--repeats", "4" if args.quick else "10", *threads)
        if (ROOT / args.ckpt / "run.json").is_file():
            limit = ["--limit", "60"] if args.quick else []
            raw["generation_real"] = run_json("generation_speed.py", "--ckpt", args.ckpt, *limit, *threads)
        else:
            raw["generation_real"] = {"skipped": f"no trained run at {args.ckpt} (gptf run recipes/teacher_3m.yaml)"}
    if "training" not in args.skip:
        steps = ["--steps", "10", "--chunk", "2"] if args.quick else ["--steps", "30", "--chunk", "5"]
        variants = ["naive", "gptf", "gptf_fp32", "gptf_mb4_fp32", "gemm_floor"]
        raw["training"] = run_json("train_speed.py", *steps, *threads, "--variants", *variants)
    if "run" not in args.skip:
        run_steps = args.run_steps or (20 if args.quick else 60)
        raw["run"] = whole_runs(run_steps, 1 if args.quick else 2, args.threads)
    if "memory" not in args.skip:
        raw["memory"] = run_json(
            "train_memory.py", "--steps", "5" if args.quick else "20", "--variants", "naive", "gptf"
        )
    raw["load_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    raw["threads"] = raw.get("training", raw.get("generation", {})).get("machine", {}).get("threads")
    print(table(raw))
    if args.json:
        print(json.dumps(raw, ensure_ascii=False, indent=2))


def table(raw: dict[str, Any]) -> str:
    rows = ["| what | contender | speed | vs naive | % of fp32 GEMM peak | peak RSS |", "|---|---|---|---|---|---|"]
    memory = {k: v.get("peak_mb") for k, v in raw.get("memory", {}).get("results", {}).items()}
    if "generation" in raw:
        g = raw["generation"]["results"]
        base = g["naive_recompute_fp32"]["tokens_per_s"]
        what = f"generation, batch 1, random weights, {g['gptf_kv_cache_fp32']['tokens_per_answer']} tokens per answer"
        names = ("naive_recompute_fp32", "gptf_kv_cache_fp32", "gptf_kv_cache_fp32_compiled", "gptf_kv_cache_int8")
        for name in (*names, "gptf_draft_verify_fp32"):
            r = g.get(name)
            if r is None:
                continue
            speed = f"{r['tokens_per_s']} tokens/s (first token {r['first_token_ms']} ms)"
            if "acceptance" in r:  # random weights repeat no taught answer: what failing guesses cost
                speed += f"; {r['acceptance']:.0%} of guesses kept (random weights: drafting cannot help)"
            rows.append(f"| {what} | {name} | {speed} | {r['tokens_per_s'] / base:.2f}x | | |")
        rows.append(f"| | compiling the decode step | {raw['generation'].get('compile_s')} s | | | |")
    real = raw.get("generation_real", {})
    if "results" in real:
        g = real["results"]
        what = f"generation, batch 1, trained model, {real['n_questions']} held-out questions"
        base = g["naive_recompute_fp32"]["tokens_per_s"]
        names = (
            "naive_recompute_fp32",
            "gptf_kv_cache_fp32",
            "gptf_kv_cache_fp32_compiled",
            "gptf_draft_verify_fp32",
            "gptf_draft_verify_fp32_compiled",
        )
        beam = [n for n in g if n.startswith("gptf_beam_search_")]  # other answers: its own tokens per second
        for name in (n for n in (*names, *beam) if n in g):
            r = g[name]
            speed = f"{r['tokens_per_s']} tokens/s (first token {r['first_token_ms']} ms)"
            if "acceptance" in r:
                speed += f"; {r['acceptance']:.0%} of guesses kept, {r['tokens_per_model_call']} tokens per model call"
            rows.append(f"| {what} | {name} | {speed} | {r['tokens_per_s'] / base:.2f}x | | |")
        for kind, kind_results in real.get("results_by_answer", {}).items():
            for name, label in (("gptf_draft_verify_fp32", ""), ("gptf_draft_verify_fp32_compiled", ", compiled")):
                r = kind_results.get(name)
                if r and "vs_naive" in r:
                    speed = f"{r['tokens_per_s']} tokens/s, {r['tokens_per_model_call']} tokens per model call"
                    what = f"draft and verify{label}, answers that {kind}"
                    rows.append(f"| | {what} | {speed} | {r['vs_naive']:.2f}x | | |")
        same = "; ".join(f"{name}: {text}" for name, text in real["identical_to_plain"].items())
        rows.append(f"| | same answers as the plain loop | {same}; draft bank: {real['draft_bank']} | | | |")
        if real.get("compile_s") is not None:
            rows.append(f"| | compiling the decode step (all its graphs) | {real['compile_s']} s | | | |")
    elif real:
        rows.append(f"| generation, trained model, real questions | skipped | {real['skipped']} | | | |")
    if "training" in raw:
        t = raw["training"]["results"]
        for name, r in t.items():
            rss = memory.get(name)
            speed = f"{r['median_ms']} ms/step"
            if name == "gemm_floor":  # not a trainer: what the step's matrix products alone take
                speed += " (its matrix products alone: no step can be faster here)"
            rows.append(
                f"| training step (16 samples) | {name} | {speed} | {r.get('speedup_vs_naive', 0):.2f}x "
                f"| {r['pct_of_fp32_peak']}% | {f'{rss} MB' if rss else ''} |"
            )
        peak = raw["training"]["gemm_peak_gflops"]
        both = raw["training"].get("fp32_peak_at_start_and_in_turns")
        when = f" (the higher of {both[0]} at the start and {both[1]} in turns with the steps)" if both else ""
        rows.append(f"| | GEMM peak, same process | fp32 {peak['fp32']}{when} / bf16 {peak['bf16']} GFLOP/s | | | |")
    if "run" in raw:
        s = raw["run"]["seconds"]
        n = raw["run"]["steps"]
        rows.append(f"| whole run, {n} steps + val answers | naive | {s['naive']:.1f} s | 1.00x | | |")
        rows.append(
            f"| whole run, {n} steps + val answers | gptf run | {s['gptf']:.1f} s | {s['naive'] / s['gptf']:.2f}x | | |"
        )
        p = raw["run"].get("precision") or {}
        rows.append(f"| precision: auto | chose **{p.get('precision')}** | {p.get('reason')} | | | |")
    m = raw["machine"]
    load = raw["load_1m"]
    rows.append("")
    rows.append(
        f"Machine: {m['cpu']}, flags {' '.join(m['flags']) or '-'}, {m['cores']} logical cores, "
        f"{raw.get('threads')} torch threads, torch {m['torch']}; 1-minute load {load['before']} before, "
        f"{load['after']} after."
    )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
