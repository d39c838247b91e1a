"""Quality-gated retraining: the default weights change only when the answers get better.

``gptf run RECIPE --init-from checkpoints/teacher_3m --promote-if-better``

    checkpoints/<name>/            the newest run (always written, good or not)
    checkpoints/<name>/best/       the promoted run: what the class uses
                                   (gptf chat --ckpt checkpoints/<name>/best)
    checkpoints/<name>/promotion.json   this run's A/B decision and both scores
    checkpoints/<name>/promotions.jsonl every decision so far, one per line

An A/B test: after training, the new run (B) and the current best (A) answer the same
held-out questions, greedily, with the same decoding settings, and ``best/`` is replaced
only if B's score is strictly higher. If there is no ``best/`` yet, the run we start from
(``--init-from``) becomes it first, so a worse retrain can never lose the old weights;
with neither, the first run becomes the best.

The score: mean character F1 on ``data.val``. Val, because the data card keeps
``data.test`` for the final report only: choosing a model on the test set would make its
score optimistic. Character F1, because it gives partial credit to a nearly right answer
(exact match is rare for a 3M model, so it would mostly tie) and measures the answers the
class sees, not the loss.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gptf.decoding.answer_workers import side_by_side_answers
from gptf.errors import GptfError
from gptf.evaluate import SplitReport, evaluate_file
from gptf.recipe import LoadedRecipe, Recipe
from gptf.run import beam_choice, load_run, run_recipe, sampling_settings, taught_memory
from gptf.train.run_files import RunFiles, append_jsonl, write_json

BEST = "best"
DECISION = "promotion.json"
HISTORY = "promotions.jsonl"
METRIC = "char_f1"


def best_dir(run_dir: Path) -> Path:
    return run_dir / BEST


def has_run(folder: Path) -> bool:
    files = RunFiles(folder)
    return files.recipe.is_file() and files.tokenizer.is_file() and files.weights.is_file()


def copy_run(source: Path, target: Path) -> None:
    """Replace ``target`` by a copy of the run files in ``source`` (its top-level files only).

    The copy is made in a temporary folder and renamed into place, so ``target`` is
    always either the old run or the new one, never half of each."""
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.parent / f".{target.name}.incoming-{os.getpid()}"
    outgoing = target.parent / f".{target.name}.outgoing-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir()
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in (DECISION, HISTORY):
            shutil.copy2(path, incoming / path.name)
    if target.exists():
        os.replace(target, outgoing)
    os.replace(incoming, target)
    shutil.rmtree(outgoing, ignore_errors=True)


def held_out_file(recipe: Recipe) -> str:
    path = recipe.data.val
    if not path:
        raise GptfError(
            "--promote-if-better compares runs on held-out questions, but the recipe has no data.val",
            hint="set data.val to a JSONL file of questions the model is not trained on",
        )
    if not Path(path).is_file():
        raise GptfError(f"--promote-if-better: the held-out file {path} (data.val) does not exist")
    return path


def score_run(run_dir: Path, recipe: Recipe, path: str, device: str) -> SplitReport:
    """Answer ``path`` greedily with the run in ``run_dir``, decoding as ``recipe`` says."""
    run = load_run(run_dir, device=device, trust_plugins=True)  # runs of the recipe being trained: its plugins
    from gptf.build.components import build_constraints
    from gptf.generate import Generator

    constraints = build_constraints(recipe.generation.constraints, run.registry, run.tokenizer)
    choice = beam_choice(recipe.generation.beam_choice, recipe.generation.beams)
    needed = choice == "taught_question" or recipe.generation.memory is not None
    taught = run.taught_questions(required=True) if needed else None
    generator = Generator(
        run.model,
        run.tokenizer,
        constraints,
        draft=recipe.generation.draft,
        draft_bank=run.draft_bank(),
        beams=recipe.generation.beams,
        taught=taught,
        beam_choice=choice,
        memory=taught_memory(recipe.generation.memory, taught, run.tokenizer),
    )
    settings = sampling_settings(recipe, temperature=0.0, top_k=0, top_p=1.0)
    return evaluate_file(generator, path, settings, name="val", kind="generalisation")


def ab_table(best: SplitReport | None, new: SplitReport, best_path: Path, new_path: Path) -> Table:
    table = Table(title=f"A/B on {new.path} ({new.evaluated} held-out questions, greedy)", title_justify="left")
    for column in ("", "run", "char F1 (decides)", "exact", "ROUGE-L", "readable"):
        table.add_column(column)
    rows = [("A  current best", best_path, best), ("B  new run", new_path, new)]
    for label, path, report in rows:
        if report is None:
            table.add_row(label, "(none yet)", "-", "-", "-", "-")
            continue
        table.add_row(
            label,
            str(path),
            f"[bold]{report.char_f1:.4f}[/]",
            f"{report.exact:.1%}",
            f"{report.rouge_l:.4f}",
            f"{report.readable:.1%}",
        )
    return table


def run_with_promotion(
    loaded: LoadedRecipe, console: Console, *, init_from: Path | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Train, then promote the new run to ``best/`` only if it beats the current best."""
    recipe = loaded.recipe
    held_out = held_out_file(recipe)
    run_dir = recipe.run_dir
    best = best_dir(run_dir)
    seeded = False
    if not has_run(best) and init_from is not None:
        copy_run(Path(init_from), best)  # the weights we start from are the ones to beat
        seeded = True
        console.print(f"current best: none yet, so {init_from} becomes {best} before retraining")
    result = run_recipe(loaded, console, init_from=init_from, device=device)

    console.rule("A/B: promote only if better")
    started = time.perf_counter()
    with side_by_side_answers():
        new = score_run(result.run_dir, recipe, held_out, device)
        old = score_run(best, recipe, held_out, device) if has_run(best) else None
    promoted = old is None or new.char_f1 > old.char_f1
    console.print(ab_table(old, new, best, result.run_dir))
    if promoted:
        copy_run(result.run_dir, best)
        verdict = f"[green]promoted[/]: {best} now holds the new run " + (
            f"(char F1 {new.char_f1:.4f} > {old.char_f1:.4f})" if old else "(there was no best yet)"
        )
    else:
        assert old is not None
        verdict = (
            f"[yellow]kept the current best[/]: the new run's char F1 {new.char_f1:.4f} is not above "
            f"{old.char_f1:.4f}; {best} is unchanged (the new run stays in {result.run_dir})"
        )
    console.print(verdict)
    decision = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "decision": "promoted" if promoted else "kept",
        "metric": METRIC,
        "held_out": held_out,
        "new": {"run": str(result.run_dir), **new.summary()},
        "best_before": {"run": str(best), **old.summary()} if old else None,
        "init_from": str(init_from) if init_from else None,
        "best_seeded_from_init": seeded,
        "ab_seconds": round(time.perf_counter() - started, 2),
    }
    write_json(run_dir / DECISION, decision)
    append_jsonl(run_dir / HISTORY, decision)
    if promoted:
        write_json(best / DECISION, decision)
    console.print(f"decision saved to {run_dir / DECISION}", highlight=False)
    return decision
