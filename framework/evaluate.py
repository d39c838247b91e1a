"""Did it learn? Answer every prompt of a data file greedily and score it against the reference.

Scores, per answer (all in [0, 1]):

* **exact match**: the answer equals the reference after trimming whitespace and the final
  punctuation ("注意力。" == "注意力");
* **char F1**: Chinese has no spaces between words, so we compare *characters*: precision =
  shared characters / answer length, recall = shared characters / reference length, F1 = their
  harmonic mean. Order does not matter;
* **ROUGE-L**: the same F1, but "shared" is the longest common subsequence (LCS) of the two
  character strings, so order does matter;
* **readable**: the answer is non-empty, has no U+FFFD (�, half a character) and does not
  loop (see :func:`readability_problem`).

Punctuation and whitespace are left out of char F1 and ROUGE-L: a missing "，" is not a wrong fact.

Two questions are kept apart, because they mean different things:

* **recall**: prompts the model was trained on. A high score only proves it memorised;
* **generalisation** (held-out): new phrasings of the same facts (val/test). This is what
  "understood the question" looks like.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console
from rich.table import Table

from gptf.data import Sample, normalize_prompt, read_jsonl
from gptf.generate import Generator, SamplingSettings, greedy_answers

FINAL_PUNCTUATION = "。．.！!？?，,；;：:…~～"
REPLACEMENT_CHAR = "\ufffd"
# A character (not a digit: 10000 is fine) four or more times in a row: 的的的的
_REPEATED_CHAR = re.compile(r"(\D)\1{3,}")
# A run of 2-20 characters three or more times in a row: 注意力注意力注意力
_REPEATED_NGRAM = re.compile(r"(.{2,20}?)\1{2,}", re.DOTALL)


# ------------------------------------------------------------------ scoring one answer


def normalize_answer(text: str) -> str:
    """Trim whitespace and the final punctuation, for exact match."""
    return text.strip().rstrip(FINAL_PUNCTUATION + " \t\r\n\u3000")


def content_chars(text: str) -> str:
    """The characters that carry meaning: no punctuation (P*), spaces (Z*) or control (C*)."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZC")


def exact_match(answer: str, reference: str) -> bool:
    return normalize_answer(answer) == normalize_answer(reference)


def f1_from_overlap(overlap: int, answer_len: int, reference_len: int) -> float:
    if answer_len == 0 and reference_len == 0:
        return 1.0
    if overlap == 0:
        return 0.0
    precision, recall = overlap / answer_len, overlap / reference_len
    return 2 * precision * recall / (precision + recall)


def char_f1(answer: str, reference: str) -> float:
    """F1 over characters, counted with multiplicity (bag of characters)."""
    a, r = content_chars(answer), content_chars(reference)
    overlap = sum((Counter(a) & Counter(r)).values())
    return f1_from_overlap(overlap, len(a), len(r))


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence, by dynamic programming one row at a time.

    ``row[j]`` = LCS of the first i characters of ``a`` and the first j of ``b``."""
    row = [0] * (len(b) + 1)
    for ch in a:
        diagonal = 0  # row[j - 1] of the previous line
        for j, other in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if ch == other else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 on characters: like char F1, but only characters in the same order count."""
    a, r = content_chars(answer), content_chars(reference)
    return f1_from_overlap(lcs_length(a, r), len(a), len(r))


def readability_problem(answer: str) -> str:
    """Why an answer is unreadable, or ``""`` if it is fine."""
    if not answer.strip():
        return "empty"
    if REPLACEMENT_CHAR in answer:
        return "broken character (U+FFFD)"
    match = _REPEATED_CHAR.search(answer) or _REPEATED_NGRAM.search(answer)
    if match:
        return f"repeats {match.group(1)!r}"
    return ""


@attrs.frozen
class AnswerScore:
    prompt: str
    reference: str
    answer: str
    exact: bool
    char_f1: float
    rouge_l: float
    problem: str  # "" when readable
    tokens: int
    source: str = ""  # "file:line"

    @property
    def readable(self) -> bool:
        return not self.problem


def score_answer(sample: Sample, answer: str, tokens: int = 0) -> AnswerScore:
    return AnswerScore(
        prompt=sample.prompt,
        reference=sample.completion,
        answer=answer,
        exact=exact_match(answer, sample.completion),
        char_f1=char_f1(answer, sample.completion),
        rouge_l=rouge_l(answer, sample.completion),
        problem=readability_problem(answer),
        tokens=tokens,
        source=sample.source,
    )


# ------------------------------------------------------------------ scoring a data file


@attrs.frozen
class SplitReport:
    """The scores of one data file (or a sample of it)."""

    name: str  # e.g. "val"
    kind: str  # "recall" or "generalisation"
    path: str
    total: int  # samples in the file
    answers: list[AnswerScore]
    seen_in_training: float  # share of these prompts that are also training prompts
    seconds: float

    @property
    def evaluated(self) -> int:
        return len(self.answers)

    def mean(self, field: str) -> float:
        if not self.answers:
            return 0.0
        return sum(float(getattr(a, field)) for a in self.answers) / len(self.answers)

    @property
    def exact(self) -> float:
        return self.mean("exact")

    @property
    def char_f1(self) -> float:
        return self.mean("char_f1")

    @property
    def rouge_l(self) -> float:
        return self.mean("rouge_l")

    @property
    def readable(self) -> float:
        return self.mean("readable")

    def worst(self, n: int) -> list[AnswerScore]:
        return sorted(self.answers, key=lambda a: (a.char_f1, a.rouge_l))[:n]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "samples": self.total,
            "evaluated": self.evaluated,
            "seen_in_training": round(self.seen_in_training, 4),
            "exact_match": round(self.exact, 4),
            "char_f1": round(self.char_f1, 4),
            "rouge_l": round(self.rouge_l, 4),
            "readable": round(self.readable, 4),
            "seconds": round(self.seconds, 2),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "answers": [attrs.asdict(a) | {"readable": a.readable} for a in self.answers]}


def sample_evenly(samples: Sequence[Sample], limit: int, seed: int = 0) -> list[Sample]:
    """At most ``limit`` samples, a seeded random choice kept in file order (0 = all)."""
    if limit <= 0 or len(samples) <= limit:
        return list(samples)
    chosen = sorted(random.Random(seed).sample(range(len(samples)), limit))
    return [samples[i] for i in chosen]


def evaluate_samples(
    generator: Generator,
    samples: Sequence[Sample],
    settings: SamplingSettings,
    on_answer: Callable[[int], None] | None = None,
) -> list[AnswerScore]:
    """Answer each prompt with ``settings`` (greedy for a fair score) and score it.

    Greedy answers are computed many prompts at a time (:mod:`gptf.generate`)."""
    if settings.temperature <= 0:
        prompts = [s.prompt for s in samples]
        answers = greedy_answers(generator, prompts, settings.max_new_tokens, on_progress=on_answer)
        return [score_answer(s, a.text, a.tokens) for s, a in zip(samples, answers, strict=True)]
    scores = []
    for done, sample in enumerate(samples, start=1):
        answer = generator.generate(sample.prompt, settings, seed=0)
        scores.append(score_answer(sample, answer.text, len(answer.tokens)))
        if on_answer is not None:
            on_answer(done)
    return scores


def evaluate_file(
    generator: Generator,
    path: str | Path,
    settings: SamplingSettings,
    *,
    name: str,
    kind: str,
    limit: int = 0,
    training_prompts: set[str] | None = None,
    on_answer: Callable[[int], None] | None = None,
) -> SplitReport:
    """Score a JSONL file (or ``limit`` samples of it)."""
    samples = read_jsonl(path)
    chosen = sample_evenly(samples, limit)
    seen = 0.0
    if training_prompts and chosen:
        seen = sum(normalize_prompt(s.prompt) in training_prompts for s in chosen) / len(chosen)
    started = time.perf_counter()
    answers = evaluate_samples(generator, chosen, settings, on_answer)
    return SplitReport(name, kind, str(path), len(samples), answers, seen, time.perf_counter() - started)


def prompt_set(path: str | Path) -> set[str]:
    return {normalize_prompt(s.prompt) for s in read_jsonl(path)}


# ------------------------------------------------------------------ showing the results


def scores_table(reports: Sequence[SplitReport], title: str = "evaluation (greedy)") -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("split", "left"),
        ("kind", "left"),
        ("answers", "right"),
        ("seen in training", "right"),
        ("exact", "right"),
        ("char F1", "right"),
        ("ROUGE-L", "right"),
        ("readable", "right"),
        ("time", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in reports:
        count = f"{r.evaluated}" if r.evaluated == r.total else f"{r.evaluated} of {r.total}"
        table.add_row(
            r.name,
            r.kind,
            count,
            f"{r.seen_in_training:.0%}",
            f"{r.exact:.1%}",
            f"{r.char_f1:.3f}",
            f"{r.rouge_l:.3f}",
            f"{r.readable:.1%}",
            f"{r.seconds:.1f}s",
        )
    return table


def worst_table(report: SplitReport, n: int) -> Table:
    table = Table(title=f"worst {n} answers on {report.name} (lowest char F1)", title_justify="left")
    for column in ("prompt", "reference", "answer", "F1", "problem"):
        table.add_column(column, overflow="fold")
    for a in report.worst(n):
        table.add_row(a.prompt, a.reference, a.answer or "(empty)", f"{a.char_f1:.2f}", a.problem or "-")
    return table


def print_report(console: Console, reports: Sequence[SplitReport], worst: int = 5) -> None:
    console.print(scores_table(reports))
    held_out = [r for r in reports if r.kind == "generalisation"]
    for report in held_out if worst > 0 else []:
        console.print(worst_table(report, worst))


def report_json(reports: Sequence[SplitReport], **extra: Any) -> dict[str, Any]:
    return {**extra, "splits": [r.to_json() for r in reports]}


# ------------------------------------------------------------------ a whole run


@attrs.frozen
class EvalFile:
    """One data file to score, and what its score means."""

    name: str
    kind: str  # "recall" or "generalisation"
    path: str
    limit: int = 0  # 0: every sample


def default_eval_files(data: Any, recall_samples: int) -> list[EvalFile]:
    """The recipe's training file (recall, sampled) and its val/test files (generalisation)."""
    files = [EvalFile("train", "recall", data.train, recall_samples)]
    files += [EvalFile(name, "generalisation", path) for name, path in (("val", data.val), ("test", data.test)) if path]
    return files


def eval_files_for(paths: Sequence[str | Path], train_path: str | None) -> list[EvalFile]:
    """``--data`` files: the run's own training file counts as recall, anything else as held-out."""
    train = Path(train_path).resolve() if train_path else None
    return [EvalFile(Path(p).stem, "recall" if Path(p).resolve() == train else "generalisation", str(p)) for p in paths]


def evaluate_files(
    generator: Generator,
    files: Sequence[EvalFile],
    settings: SamplingSettings,
    console: Console,
    *,
    train_path: str | None = None,
) -> list[SplitReport]:
    """Score every file that exists (a missing one is reported and skipped), with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    training_prompts = prompt_set(train_path) if train_path and Path(train_path).is_file() else None
    reports = []
    for item in files:
        if not Path(item.path).is_file():
            console.print(f"[yellow]skipped {item.name}: {item.path} not found (run gptf eval where it exists)[/]")
            continue
        total = len(sample_evenly(read_jsonl(item.path), item.limit))
        with Progress(
            TextColumn(f"answering {item.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task(item.name, total=total)
            report = evaluate_file(
                generator,
                item.path,
                settings,
                name=item.name,
                kind=item.kind,
                limit=item.limit,
                training_prompts=training_prompts,
                on_answer=lambda done, task=task: progress.update(task, completed=done),
            )
        reports.append(report)
        if report.evaluated < report.total:
            console.print(
                f"{item.name}: scored a seeded random sample of {report.evaluated} of {report.total} prompts",
                highlight=False,
            )
    return reports


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Decode with one CPU thread, then restore the previous setting.

    Decoding a small model is mostly per-call overhead, and extra threads wait on each other when
    the CPU is busy (measured on 2 shared cores: 200 val answers in 7.4 s with 1 thread, 73 s with 2)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate_after_training(
    generator: Generator, recipe: Any, console: Console, out: Path, limit: int = 0
) -> SplitReport | None:
    """The check that ends ``gptf run``: greedy answers to the held-out val prompts."""
    if not recipe.data.val or not Path(recipe.data.val).is_file():
        return None
    g = recipe.generation
    settings = SamplingSettings(max_new_tokens=g.max_new_tokens, temperature=0.0)
    console.rule("evaluation on val (held-out prompts, greedy)")
    files = [EvalFile("val", "generalisation", recipe.data.val, limit)]
    with one_thread():
        reports = evaluate_files(generator, files, settings, console, train_path=recipe.data.train)
    print_report(console, reports, worst=3)
    from gptf.train.run_files import write_json

    write_json(out, report_json(reports, decoding="greedy", max_new_tokens=settings.max_new_tokens))
    return reports[0]
