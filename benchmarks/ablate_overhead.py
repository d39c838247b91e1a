"""Where the time of one ``gptf ablate`` run goes (issue 11): every stage of one variant's run, timed.

    python benchmarks/ablate_overhead.py --swap model.positional=rope --steps 300 --runs 2 --out /tmp/abl-probe

Trains ``--runs`` runs (seeds 0, 1, ...) one after the other in this process, exactly as a ``gptf
ablate`` worker does (:func:`gptf.tools.ablate.run_one`, the ablation's planned recipes: their eval
interval, threads and seeds), with timers wrapped around the stages of :mod:`gptf.run` and the parts
inside them, then prints each stage's seconds in every run and its share of the run. The first
line times what a worker process pays before its first run (importing gptf and torch) and what the
main process pays before any run trains (planning the whole grid).

Nothing here changes what is computed: the wrappers only read the clock. Run it on a quiet machine,
one at a time, and say the load (``uptime``) with the numbers.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import collections  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

TORCH_IMPORTED = time.perf_counter()

import gptf.evaluate  # noqa: E402
import gptf.generate  # noqa: E402
import gptf.run  # noqa: E402
import gptf.tools.ablate as ablate  # noqa: E402
from gptf.train.session import TrainingSession  # noqa: E402
from gptf.train.trainer import Trainer  # noqa: E402

GPTF_IMPORTED = time.perf_counter()

ROOT = Path(__file__).resolve().parents[1]
SECONDS: dict[str, float] = collections.defaultdict(float)
CALLS: dict[str, int] = collections.defaultdict(int)


def timed(owner: object, name: str, label: str) -> None:
    """Replace ``owner.name`` by the same function that also adds its time to ``label``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - started
            CALLS[label] += 1

    setattr(owner, name, wrapper)


#: (owner, attribute, label); a label with a leading "  " is a part of the label above it
PROBES = [
    (gptf.run, "load_stage", "load stage"),
    (gptf.run, "validate_for_run", "  validate recipe, load plugins"),
    (gptf.run, "read_jsonl", "  read data files"),
    (gptf.run, "prepare_tokenizer", "  load tokenizer"),
    (gptf.run, "tokenize_data", "  tokenise train + val"),
    (gptf.run, "build_stage", "build stage (model)"),
    (gptf.run, "train_stage", "train stage"),
    (Trainer, "train_step", "  optimizer steps"),
    (Trainer, "_eval_and_report", "  periodic + final val loss"),
    (TrainingSession, "save", "  resumable checkpoints"),
    (gptf.run, "append_jsonl", "  metrics.jsonl lines"),
    (gptf.run, "finish_stage", "finish stage"),
    (gptf.run, "save_weights", "  fp32 weights"),
    (gptf.run, "save_tensors", "  int8 weights (write)"),
    (gptf.run, "build_quantizer", "  build quantizer"),
    (gptf.run, "report_stage", "report stage"),
    (gptf.run, "Generator", "  generator (constraints)"),
    (gptf.run, "demo_answers", "  demo answers"),
    (gptf.run, "evaluate_after_training", "  held-out val answers, scored"),
    (gptf.evaluate, "concepts_for", "    concept index (train+val+test)"),
    (gptf.evaluate, "greedy_answers", "    greedy decoding"),
    (gptf.evaluate, "score_answer", "    scoring"),
    (gptf.evaluate, "print_report", "    printing the report"),
    (gptf.run, "run_record", "  run.json record (fingerprints)"),
    (TrainingSession, "close", "remove checkpoints"),
    (gptf.run, "print_summary", "summary"),
    (gptf.run, "report_loss_plot", "  loss.png"),
    (ablate, "read_loss_curves", "read curves (ablate record)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "teacher_3m.yaml"))
    parser.add_argument("--swap", default="model.positional=rope")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1, help="runs in a row in this process (seeds 0..N-1)")
    parser.add_argument("--out", default="/tmp/gptf-ablate-probe")
    parser.add_argument("--json", help="also write the timings here")
    args = parser.parse_args()

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    grid = ablate.Settings(
        Path(args.recipe),
        ablate.check_swaps_given(["model.positional=rope,learned,none"]),
        steps=args.steps,
        seeds=2,
        out=out,
        tune=ablate.parse_swap("training.lr=6e-4,2e-3", "--tune"),
    )
    started = time.perf_counter()
    ablate.make_plan(grid)
    plan_s = time.perf_counter() - started

    settings = ablate.Settings(
        Path(args.recipe),
        ablate.check_swaps_given([args.swap]),
        ["training.threads=1"],
        steps=args.steps,
        seeds=args.runs,
        out=out,
    )
    plan = ablate.make_plan(settings)
    for owner, name, label in PROBES:
        timed(owner, name, label)
    torch.set_num_threads(1)
    print(f"imports: torch {TORCH_IMPORTED - STARTED:.2f} s, gptf {GPTF_IMPORTED - TORCH_IMPORTED:.2f} s; "
          f"planning the 12-run grid (main process) {plan_s:.2f} s")  # fmt: skip
    runs = []
    for run in plan.runs:
        SECONDS.clear()
        CALLS.clear()
        started = time.perf_counter()
        record = ablate.run_one(run)
        seconds = time.perf_counter() - started
        runs.append({"run": f"{run.variant.label} seed {run.seed}", "status": record["status"],
                     "seconds": seconds, "stages": dict(SECONDS), "calls": dict(CALLS)})  # fmt: skip
    print(f"{args.swap}, {args.steps} steps, 1 thread; one column per run, in the order trained")
    print(f"{'one run (run_one)':<40}" + "".join(f" {r['seconds']:8.2f} s        " for r in runs))
    for _, _, label in PROBES:
        cells = [
            f" {r['stages'].get(label, 0.0):8.2f} s {r['stages'].get(label, 0.0) / r['seconds']:6.1%}" for r in runs
        ]
        print(f"{label:<40}" + "".join(cells) + f"  ({runs[-1]['calls'].get(label, 0)} calls)")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
