"""Where the time of one ``gptf ablate`` run goes (issue 11): every stage of one variant's run, timed.

    python benchmarks/ablate_overhead.py --swap model.positional=rope --steps 300 --out /tmp/abl-probe

Trains ONE run exactly as a ``gptf ablate`` worker does (:func:`gptf.tools.ablate.run_one`, the
ablation's planned recipe: its eval interval, threads and seed 0), with timers wrapped around the
stages of :mod:`gptf.run` and the parts inside them, then prints each one's seconds and share of the
run. The first lines time what a worker process pays before its first run (importing gptf and
torch) and what the main process pays before any run trains (planning the whole grid).

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
        Path(args.recipe), ablate.check_swaps_given([args.swap]), ["training.threads=1"], steps=args.steps, out=out
    )
    plan = ablate.make_plan(settings)
    run = plan.runs[0]
    for owner, name, label in PROBES:
        timed(owner, name, label)
    torch.set_num_threads(1)
    started = time.perf_counter()
    record = ablate.run_one(run)
    run_s = time.perf_counter() - started

    rows = [
        ("import torch", TORCH_IMPORTED - STARTED, 1),
        ("import gptf (ablate, run, ...)", GPTF_IMPORTED - TORCH_IMPORTED, 1),
        ("plan the 12-run grid (main process)", plan_s, 1),
        ("one run (run_one)", run_s, 1),
        *[(label, SECONDS[label], CALLS[label]) for _, _, label in PROBES],
    ]
    print(f"{run.variant.label}, {args.steps} steps, 1 thread, status {record['status']}")
    for label, seconds, calls in rows:
        share = f"{seconds / run_s:6.1%}" if not label.startswith(("import", "plan", "one run")) else "      "
        print(f"{label:<40} {seconds:8.2f} s {share}  ({calls} call{'s' if calls != 1 else ''})")
    if args.json:
        Path(args.json).write_text(json.dumps({label: s for label, s, _ in rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
