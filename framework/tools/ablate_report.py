"""The report of ``gptf ablate``: statistics over seeds, the best tuned value, the tables, a
reading computed from the numbers, and the chart.

Rules, stated once (the table's footnote repeats them):

* a variant's *best* value of the tuned key is the one with the lowest mean final val loss
  over its seeds, among the values at which no seed failed; the test split is never used;
* ``mean ± std``: mean and sample standard deviation over seeds;
* seeds are *paired*: seed k of every variant starts from the same random state and reads the
  data in the same order, so two variants are compared seed by seed. Their difference is
  ``Δ ± s``: the mean and the standard deviation of the per-seed differences;
* the difference is **clear** when a paired t-test over the seeds says so at the 5% level
  (``|Δ| > t · s / sqrt(n)``, t the two-sided 97.5% point of Student's t with n - 1 degrees of
  freedom: 12.7 for 2 seeds, 4.3 for 3), else **within noise**; with one seed there is no
  spread, so nothing is called clear ("1 seed: no error bars").

``plan`` below is a :class:`gptf.tools.ablate.Plan` (not imported: that module imports this one).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gptf import __version__
from gptf.evaluate import decoding_name
from gptf.plots import PLOTS_HINT, Band, save_val_curves
from gptf.train.run_files import write_json, write_text

#: Two-sided 97.5% points of Student's t by degrees of freedom (paired t-test at the 5% level).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}  # fmt: skip


def t_975(df: int) -> float:
    """The table's value at the largest tabulated df <= ``df`` (a little conservative in between)."""
    return T_975[max(k for k in T_975 if k <= df)]


# ------------------------------------------------------------------ statistics


def mean_and_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean, and the standard deviation over seeds (None with fewer than two)."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    spread = statistics.stdev(present) if len(present) > 1 else None
    return statistics.fmean(present), spread


def compare(worse: dict[str, Any], better: dict[str, Any]) -> dict[str, Any]:
    """How far the cell ``worse`` trails ``better`` in val loss, seed by seed, and whether the
    seeds can tell them apart (a paired t-test at the 5% level)."""
    seeds = sorted(set(worse["val_by_seed"]) & set(better["val_by_seed"]))
    diffs = [worse["val_by_seed"][s] - better["val_by_seed"][s] for s in seeds]
    mean = statistics.fmean(diffs) if diffs else worse["final_val_loss"] - better["final_val_loss"]
    if len(diffs) < 2:
        return {"diff": mean, "spread": None, "per_seed": diffs, "verdict": "1 seed: no error bars"}
    spread = statistics.stdev(diffs)
    t = t_975(len(diffs) - 1)
    clear = abs(mean) > t * spread / math.sqrt(len(diffs))
    return {"diff": mean, "spread": spread, "per_seed": diffs, "verdict": "clear" if clear else "within noise"}


# ------------------------------------------------------------------ summarising


def cell_stats(value: str | None, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant at one tuned value: its seeds summarised."""
    ok = [r for r in runs if r["status"] == "ok"]
    val_mean, val_std = mean_and_spread([r["final_val_loss"] for r in ok])
    train_mean, train_std = mean_and_spread([r["final_train_loss"] for r in ok])
    evals = [r.get("val_eval") or {} for r in ok]
    unstable = [
        {"seed": r["seed"], **_first_event(r.get("stability") or {})}
        for r in runs
        if not (r.get("stability") or {"stable": True}).get("stable", True)
    ]
    return {
        "value": value,
        "seeds_ok": len(ok),
        "seeds_failed": len(runs) - len(ok),
        "errors": [r["error"] for r in runs if r["status"] != "ok"],
        "val_losses": [r["final_val_loss"] for r in ok],
        "val_by_seed": {str(r["seed"]): r["final_val_loss"] for r in ok},
        "final_val_loss": val_mean,
        "final_val_loss_std": val_std,
        "final_train_loss": train_mean,
        "final_train_loss_std": train_std,
        "char_f1": mean_and_spread([e.get("char_f1") for e in evals])[0],
        "readable": mean_and_spread([e.get("readable") for e in evals])[0],
        "unstable": unstable,
        "seeds": len(runs),
        "steps": ok[0]["steps"] if ok else None,
        "parameters": ok[0]["parameters"] if ok else None,
        "wall_s": mean_and_spread([r["wall_s"] for r in ok])[0],
        "tokens_per_s": mean_and_spread([r["tokens_per_s"] for r in ok])[0],
        "demo": ok[0]["demo"] if ok else [],
        "run_dirs": [r["run_dir"] for r in runs],
        "val_curve": _mean_curve([r["val_curve"] for r in ok]),
    }


def _first_event(stability: dict[str, Any]) -> dict[str, Any]:
    events = stability.get("events") or []
    if events:
        return {"kind": events[0]["kind"], "step": events[0]["step"], "lr": events[0]["lr"]}
    summary = stability.get("summary", "unstable")
    return {"kind": summary.split(":")[0], "step": None, "lr": None}


def variant_row(plan: Any, variant: Any, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One row of the table: every tuned value's cell, the best one and the recipe's one."""
    cells = []
    for value in plan.tune_values:
        runs = [records[r.key] for r in plan.runs if r.variant == variant and r.tune == value and r.key in records]
        cells.append(cell_stats(value, runs))
    eligible = [c for c in cells if c["final_val_loss"] is not None and not c["seeds_failed"]]
    eligible = eligible or [c for c in cells if c["final_val_loss"] is not None]
    best = min(eligible, key=lambda c: c["final_val_loss"]) if eligible else cells[0]
    at_recipe = next(c for c in cells if c["value"] == plan.recipe_tune_value)
    prompts = list(plan.base.recipe.demo_prompts)
    answers = {d["prompt"]: d["answer"] for d in best["demo"]}
    return {
        "variant": variant.label,
        "overrides": variant.overrides,
        "steps": plan.steps_by_variant.get(variant.slug, plan.steps),
        "seconds_per_step": plan.step_seconds.get(variant.slug),
        "cells": cells,
        "best": best,
        "at_recipe": at_recipe,
        # the best cell's numbers at the top level, as before --tune existed
        **{k: best[k] for k in ("seeds_ok", "seeds_failed", "errors", "parameters", "wall_s", "tokens_per_s")},
        **{k: best[k] for k in ("final_train_loss", "final_train_loss_std", "final_val_loss", "final_val_loss_std")},
        **{k: best[k] for k in ("char_f1", "readable", "run_dirs", "val_curve")},
        "demo": [{"prompt": p, "answer": answers.get(p)} for p in prompts],
    }


def summarise(plan: Any, records: dict[str, dict[str, Any]], seconds: float, trained: int = 0) -> dict[str, Any]:
    """One row per variant plus every run's record, the comparisons and the reading."""
    rows = [variant_row(plan, v, records) for v in plan.variants]
    finished = [r for r in rows if r["final_val_loss"] is not None]
    top = min(finished, key=lambda r: r["final_val_loss"]) if finished else None
    for row in rows:
        paired = top is not None and row in finished and row is not top
        row["vs_best"] = compare(row["best"], top["best"]) if paired else None
    tune = plan.settings.tune
    generation = plan.base.recipe.generation
    summary = {
        "gptf_version": __version__,
        "torch_version": torch.__version__,
        "threads": plan.threads or torch.get_num_threads(),
        "jobs": plan.jobs,
        "command": plan.settings.command(),
        "recipe": str(plan.settings.recipe),
        "recipe_chain": [str(p) for p in plan.base.chain],
        "steps": plan.steps,
        "budget": plan.settings.budget,
        "seeds": plan.settings.seeds,
        "eval_interval": plan.eval_interval,
        # how the runs answered data.val
        "decoding": decoding_name(generation.beams, generation.beam_choice, generation.memory is not None),
        "swaps": [{"key": s.key, "values": s.values} for s in plan.settings.swaps],
        "tune": None
        if tune is None
        else {"key": tune.key, "short": tune.short, "values": plan.tune_values, "recipe_value": plan.recipe_tune_value},
        "best_variant": top["variant"] if top else None,
        "seconds": round(seconds, 1),
        "trained_now": trained,  # runs trained by this call; the others were finished before
        "variants": rows,
        "runs": [records[r.key] for r in plan.runs if r.key in records],
    }
    summary["reading"] = reading(summary)
    return summary


def _mean_curve(curves: list[list[Any]]) -> dict[str, list[float]]:
    """Mean, lowest and highest validation loss at each step all seeds evaluated."""
    if not curves:
        return {"steps": [], "mean": [], "low": [], "high": []}
    by_step = [dict((int(s), float(v)) for s, v in c) for c in curves]
    steps = sorted(set.intersection(*(set(c) for c in by_step)))
    values = [[c[s] for c in by_step] for s in steps]
    return {
        "steps": steps,
        "mean": [statistics.fmean(v) for v in values],
        "low": [min(v) for v in values],
        "high": [max(v) for v in values],
    }


# ------------------------------------------------------------------ the reading


def _loss(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def _with_std(cell: dict[str, Any]) -> str:
    std = cell["final_val_loss_std"]
    return _loss(cell["final_val_loss"]) + (f" ± {_loss(std)}" if std is not None else "")


def _names(rows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(r["variant"] for r in rows)


def reading(summary: dict[str, Any]) -> list[str]:
    """Sentences computed from the numbers: who wins, by how much, whether seeds can tell,
    what tuning changed, where training was unstable, what the answers say."""
    rows = [r for r in summary["variants"] if r["final_val_loss"] is not None]
    if not rows:
        return ["No variant finished training; see each run's train.log."]
    ranked = sorted(rows, key=lambda r: r["final_val_loss"])
    lines = [_winner(summary, ranked[0])]
    lines += [_difference(summary, ranked[0], row) for row in ranked[1:]]
    if summary["tune"] is not None:
        lines += _tuning(summary, rows, ranked)
    lines += _instability(summary, summary["variants"])
    lines += _answers(summary, ranked)
    if summary["budget"] == "seconds":
        lines.append(_time_budget(summary))
    return lines


def _at(summary: dict[str, Any], cell: dict[str, Any]) -> str:
    return f" at {summary['tune']['short']} {cell['value']}" if summary["tune"] is not None else ""


def _winner(summary: dict[str, Any], top: dict[str, Any]) -> str:
    seeds = top["best"]["seeds_ok"]
    where = f" at its best {summary['tune']['short']}" if summary["tune"] is not None else ""
    over = f"mean over {seeds} seeds" if seeds > 1 else "1 seed: no error bars"
    return (
        f"{top['variant']} has the lowest final val loss{where}: {_with_std(top['best'])}{_at(summary, top['best'])} "
        f"({over})."
    )


def _difference(summary: dict[str, Any], top: dict[str, Any], row: dict[str, Any]) -> str:
    c = row["vs_best"]
    where = _at(summary, row["best"])
    if c["spread"] is None:
        return (
            f"{top['variant']} beats {row['variant']}{where} by {_loss(c['diff'])} val loss "
            f"(1 seed: no error bars, so this may be noise)."
        )
    per_seed = ", ".join(_loss(d) for d in c["per_seed"])
    by = f"{_loss(c['diff'])} ± {_loss(c['spread'])} val loss over {len(c['per_seed'])} seeds (per seed: {per_seed})"
    if c["verdict"] == "clear":
        return f"{top['variant']} beats {row['variant']}{where} by {by}: clear (paired t-test over seeds, 5% level)."
    return (
        f"{row['variant']}{where} trails {top['variant']} by {by}: within noise (paired t-test over seeds, 5% "
        "level), so no clear winner between them."
    )


def _tuning(summary: dict[str, Any], rows: list[dict[str, Any]], ranked: list[dict[str, Any]]) -> list[str]:
    tune = summary["tune"]
    short, values = tune["short"], tune["values"]
    lines = []
    for row in rows:
        best, own = row["best"], row["at_recipe"]
        if best["value"] != own["value"] and own["final_val_loss"] is not None:
            lines.append(
                f"{row['variant']}: at the recipe's {short} {own['value']} its val loss is {_with_std(own)}; at its "
                f"best {short} {best['value']} it is {_with_std(best)} "
                f"({_loss(own['final_val_loss'] - best['final_val_loss'])} lower)."
            )
        if len(values) > 1 and best["value"] in (values[0], values[-1]) and _numeric(values):
            edge, beyond = ("smallest", "smaller") if best["value"] == values[0] else ("largest", "larger")
            lines.append(
                f"{row['variant']}'s best {short} {best['value']} is the {edge} value tried: a {beyond} one may be "
                "better still."
            )
    at_recipe = sorted(
        (r for r in rows if r["at_recipe"]["final_val_loss"] is not None),
        key=lambda r: r["at_recipe"]["final_val_loss"],
    )
    if len(at_recipe) == len(ranked) > 1:
        own = tune["recipe_value"]
        if [r["variant"] for r in at_recipe] == [r["variant"] for r in ranked]:
            lines.append(f"The ranking is the same at the recipe's {short} {own} and at each variant's best {short}.")
        else:
            lines.append(
                f"Ranked at the recipe's {short} {own}: {_names(at_recipe)}; ranked at each variant's best {short}: "
                f"{_names(ranked)}. The {short} changes the conclusion: compare at each variant's best."
            )
    return lines


def _numeric(values: Sequence[Any]) -> bool:
    try:
        [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    return True


def _instability(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    short = summary["tune"]["short"] if summary["tune"] is not None else None
    for row in rows:
        for cell in row["cells"]:
            if not cell["unstable"]:
                continue
            first = cell["unstable"][0]
            at_step = f" at step {first['step']}" if first["step"] is not None else ""
            where = f" at {short} {cell['value']}" if short else ""
            line = (
                f"{row['variant']} was unstable{where}: {first['kind']}{at_step} "
                f"in {len(cell['unstable'])} of {cell['seeds']} seed(s)"
            )
            best = row["best"]
            if short and best["value"] != cell["value"] and not best["unstable"]:
                line += f"; at its best {short} {best['value']} it was stable"
            lines.append(line + ".")
    if not lines:
        lines.append("No run had a loss spike, divergence or NaN.")
    return lines + _shared_events(rows)


def _shared_events(rows: list[dict[str, Any]]) -> list[str]:
    """The same seed flagged at the same step in several variants: seed k reads the same batches in
    every variant, so the batch, not the component, is the likely cause."""
    hit: dict[tuple[Any, Any], list[str]] = {}
    for row in rows:
        for cell in row["cells"]:
            for event in cell["unstable"]:
                where = (event.get("seed"), event.get("step"))
                if None not in where and row["variant"] not in hit.get(where, []):
                    hit.setdefault(where, []).append(row["variant"])
    return [
        f"Seed {seed} was flagged at step {step} in {', '.join(names)} alike: every variant reads the same batches "
        "with the same seed, so that batch, more than the component, is the likely trigger."
        for (seed, step), names in sorted(hit.items())
        if len(names) > 1
    ]


def _answers(summary: dict[str, Any], ranked: list[dict[str, Any]]) -> list[str]:
    scored = [r for r in ranked if r["char_f1"] is not None]
    if not scored:
        return []
    by_f1 = sorted(scored, key=lambda r: -r["char_f1"])
    listed = ", ".join(
        f"{r['variant']} {r['char_f1']:.3f}" + (f" ({r['readable']:.0%} readable)" if r["readable"] is not None else "")
        for r in by_f1
    )
    where = f" at each variant's best {summary['tune']['short']}" if summary["tune"] is not None else ""
    same = [r["variant"] for r in by_f1] == [r["variant"] for r in scored]
    verdict = "the same order as the val loss" if same else "not the order of the val loss"
    decoding = summary.get("decoding", "greedy")
    return [f"Held-out char F1 of the answers to data.val ({decoding}){where}: {listed}; {verdict}."]


def _time_budget(summary: dict[str, Any]) -> str:
    parts = [
        f"{r['variant']} {r['steps']} steps ({r['seconds_per_step']:.3f} s/step)"
        for r in summary["variants"]
        if r["seconds_per_step"]
    ]
    return f"Compared at equal training time, not equal steps: {', '.join(parts)}."


# ------------------------------------------------------------------ tables


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread_text(mean: float | None, spread: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {spread:.4f}" if spread is not None else f"{mean:.4f}"


def _vs_best(row: dict[str, Any]) -> str:
    c = row["vs_best"]
    if c is None:
        return "best" if row["final_val_loss"] is not None else "-"
    if c["spread"] is None:
        return f"+{c['diff']:.4f} (1 seed)"
    return f"+{c['diff']:.4f} ± {c['spread']:.4f} ({c['verdict']})"


def _stability_text(row: dict[str, Any], short: str | None) -> str:
    parts = []
    for cell in row["cells"]:
        for_value = f"{short}={cell['value']}: " if short else ""
        if cell["unstable"]:
            first = cell["unstable"][0]
            at_step = f" @ step {first['step']}" if first["step"] is not None else ""
            parts.append(f"{for_value}{first['kind']}{at_step} ({len(cell['unstable'])}/{cell['seeds']} seeds)")
    return "; ".join(parts) or "stable"


def columns(summary: dict[str, Any]) -> list[str]:
    tune = summary["tune"]
    head = ["variant", "parameters", "steps"]
    if tune is None:
        losses = ["val loss", "vs best"]
    else:
        short = tune["short"]
        losses = [
            f"best {short}",
            f"val loss at best {short}",
            "vs best",
            f"val loss at {short}={tune['recipe_value']}",
        ]
    return [*head, *losses, "char F1 (val)", "readable", "stability", "train loss", "s/run", "tokens/s"]


def cells(row: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    tune = summary["tune"]
    failed = f" ({row['seeds_failed']} failed)" if row["seeds_failed"] else ""
    best, own = row["best"], row["at_recipe"]
    losses = [_spread_text(best["final_val_loss"], best["final_val_loss_std"]), _vs_best(row)]
    if tune is not None:
        losses = [str(best["value"]), *losses, _spread_text(own["final_val_loss"], own["final_val_loss_std"])]
    return [
        row["variant"] + failed,
        "-" if row["parameters"] is None else f"{row['parameters']:,}",
        str(row["steps"]),
        *losses,
        _num(row["char_f1"], 3),
        "-" if row["readable"] is None else f"{row['readable']:.0%}",
        _stability_text(row, tune["short"] if tune else None),
        _spread_text(row["final_train_loss"], row["final_train_loss_std"]),
        _num(row["wall_s"], 1),
        "-" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,.0f}",
    ]


def footnote(summary: dict[str, Any]) -> str:
    seeds, tune = summary["seeds"], summary["tune"]
    budget = (
        f"{summary['steps']} steps per run"
        if summary["budget"] == "steps"
        else "equal training time per run (the first variant's time for "
        f"{summary['steps']} steps; steps per variant in the table)"
    )
    spread = (
        "± is the standard deviation over the seeds; vs best: the difference to the best variant, seed by seed "
        "(seed k of every variant shares its initial state and data order), mean ± standard deviation of the "
        "per-seed differences; clear when a paired t-test over the seeds says so at the 5% level, else within "
        "noise; "
        if seeds > 1
        else "1 seed: no error bars; "
    )
    tuned = (
        f"every variant trained at {tune['key']} = {', '.join(map(str, tune['values']))}; the best value is chosen "
        "on the mean val loss (never the test split), so the numbers at the best value are slightly optimistic; "
        if tune
        else ""
    )
    reused = len(summary["runs"]) - summary.get("trained_now", len(summary["runs"]))
    reused = f" ({reused} of {len(summary['runs'])} runs were finished by an earlier call and reused)" if reused else ""
    return (
        f"Compared at {budget}, {seeds} seed(s) per variant (training.seed 0..{seeds - 1}), same data order and "
        f"initial seed for every variant; {tuned}{spread}losses are cross-entropy per answer token after the last "
        f"step; char F1 and readable: answers ({summary.get('decoding', 'greedy')}) to every data.val prompt (mean "
        f"over seeds); stability: loss "
        f"spikes, divergence or NaN (gptf.train.stability); s/run = the whole run (training, validation, saving, "
        f"answers); gptf {summary['gptf_version']}, torch {summary['torch_version']}, {summary['threads']} "
        f"thread(s) per run, {summary['jobs']} run(s) at a time; "
        f"the whole command took {summary['seconds']:.0f} s{reused}."
    )


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]], numeric: set[int]) -> list[str]:
    lines = ["| " + " | ".join(_md(c) for c in head) + " |"]
    lines.append("|" + "|".join("---:" if i in numeric else "---" for i in range(len(head))) + "|")
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in body]
    return lines


def markdown_table(summary: dict[str, Any]) -> str:
    head = columns(summary)
    body = [cells(row, summary) for row in summary["variants"]]
    text_columns = {0, head.index("stability")} | ({3} if summary["tune"] else set())
    lines = [f"# Ablation: {Path(summary['recipe']).name}", "", f"`{summary['command']}`", ""]
    lines += _md_table(head, body, set(range(len(head))) - text_columns)
    lines += ["", footnote(summary), ""]
    if summary["tune"] is not None:
        lines += ["## Every value tried", "", *_grid_table(summary), ""]
    prompts = [d["prompt"] for d in summary["variants"][0]["demo"]] if summary["variants"] else []
    if prompts:
        answers = [[row["variant"], *[d["answer"] or "-" for d in row["demo"]]] for row in summary["variants"]]
        at_best = ", at each variant's best value" if summary["tune"] is not None else ""
        lines += [f"## Demo answers (seed 0{at_best})", "", *_md_table(["variant", *prompts], answers, set())]
        lines.append("")
    lines += ["## Reading", "", *[f"- {line}" for line in summary["reading"]], ""]
    return "\n".join(lines)


def _grid_table(summary: dict[str, Any]) -> list[str]:
    short = summary["tune"]["short"]
    head = ["variant", short, "seeds", "val loss", "per seed", "char F1 (val)", "stability"]
    body = []
    for row in summary["variants"]:
        for cell in row["cells"]:
            mark = " (best)" if cell is row["best"] else ""
            mark += " (recipe)" if cell["value"] == summary["tune"]["recipe_value"] else ""
            body.append(
                [
                    row["variant"],
                    f"{cell['value']}{mark}",
                    f"{cell['seeds_ok']}/{cell['seeds']}",
                    _spread_text(cell["final_val_loss"], cell["final_val_loss_std"]),
                    ", ".join(f"{v:.4f}" for v in cell["val_losses"]) or "-",
                    _num(cell["char_f1"], 3),
                    _stability_text({"cells": [cell]}, None),
                ]
            )
    return _md_table(head, body, {2, 3, 5})


def csv_table(summary: dict[str, Any]) -> str:
    """Every variant at every tuned value, one line each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    prompts = [d["prompt"] for d in summary["variants"][0]["demo"]] if summary["variants"] else []
    fields = ["final_train_loss", "final_train_loss_std", "final_val_loss", "final_val_loss_std", "char_f1"]
    writer.writerow(
        ["variant", "overrides", "tune_value", "best", "seeds", "parameters", "steps", "wall_s", "tokens_per_s",
         *fields, "readable", "stability", *prompts]
    )  # fmt: skip
    short = summary["tune"]["short"] if summary["tune"] else None
    for row in summary["variants"]:
        for cell in row["cells"]:
            answers = {d["prompt"]: d["answer"] for d in cell["demo"]}
            writer.writerow(
                [row["variant"], " ".join(row["overrides"]), cell["value"], cell is row["best"], cell["seeds_ok"],
                 cell["parameters"], cell["steps"], cell["wall_s"], cell["tokens_per_s"], *[cell[f] for f in fields],
                 cell["readable"], _stability_text({"cells": [cell]}, short), *[answers.get(p) for p in prompts]]
            )  # fmt: skip
    return buffer.getvalue()


def rich_table(summary: dict[str, Any]) -> Table:
    table = Table(title=Text(f"ablation: {summary['command']}"), title_justify="left")
    head = columns(summary)
    for column in head:
        table.add_column(column, justify="left" if column in ("variant", "stability") else "right", overflow="fold")
    for row in summary["variants"]:
        table.add_row(*map(Text, cells(row, summary)))  # Text: no markup
    return table


# ------------------------------------------------------------------ writing


def chart_bands(summary: dict[str, Any]) -> list[Band]:
    """Each variant at its best value (solid) and, when tuning, at the recipe's value (dashed)."""
    bands = []
    tune = summary["tune"]
    for row in summary["variants"]:
        shown = [(row["best"], False)]
        if tune is not None and row["at_recipe"] is not row["best"]:
            shown.append((row["at_recipe"], True))
        for cell, dashed in shown:
            curve = cell["val_curve"]
            if not curve["steps"]:
                continue
            label = row["variant"] if tune is None else f"{row['variant']} ({tune['short']} {cell['value']})"
            label += " [recipe]" if dashed else ""
            bands.append(
                Band(label, curve["steps"], curve["mean"], curve["low"], curve["high"], row["variant"], dashed)
            )
    return bands


def write_outputs(plan: Any, summary: dict[str, Any], console: Console) -> None:
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "ablation.md", markdown_table(summary))
    write_text(out / "ablation.csv", csv_table(summary))
    write_json(out / "ablation.json", summary)
    picture = save_val_curves(chart_bands(summary), out / "val_loss.png", f"{plan.base.recipe.name}: validation loss")
    console.print(rich_table(summary))
    console.print(footnote(summary), highlight=False, markup=False)
    console.rule("reading")
    for line in summary["reading"]:
        console.print(f"- {line}", highlight=False, markup=False)
    console.print(f"table    {out / 'ablation.md'}  {out / 'ablation.csv'}", highlight=False, markup=False)
    console.print(f"all data {out / 'ablation.json'}", highlight=False, markup=False)
    if picture is not None:
        console.print(f"chart    {picture}", highlight=False, markup=False)
    else:
        console.print(
            f"chart    (no picture: matplotlib is not installed; {PLOTS_HINT})", highlight=False, markup=False
        )
    failed = sum(c["seeds_failed"] for row in summary["variants"] for c in row["cells"])
    if failed:
        console.print(f"[yellow]{failed} run(s) failed; see their train.log; re-running retries them[/]")
