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

Two scores do not depend on the wording of the reference:

* **concept** (right / declined / wrong): the concept of an answer is that of the reference answer
  (out of every reference in the run's train, val and test files) closest to it by char F1; the
  answer is *right* when that is the question's concept (the ``concept`` field of the data, else
  the reference answer itself), *declined* when it is "这个问题我还没有学过。" (said by the model or
  by the answer filter) and *wrong* otherwise: about something else, or nonsense (closer than
  :data:`MIN_CONCEPT_F1` to no reference at all). See :class:`ConceptIndex`. A question on nothing
  taught (out of scope: its reference answer *is* "这个问题我还没有学过。") is answered right by
  declining it, as its reference says; *declined* counts the questions on taught topics that got no
  answer. The report also gives the two kinds apart (:meth:`SplitReport.in_scope_right`);
* **numbers intact**: every number of the reference (a run of digits such as 337 or 2006, or of two
  or more Chinese numerals such as 二十四) appears, whole, in the answer. It matters most for recall:
  a memorised fact with a broken number is a wrong fact.

Two questions are kept apart, because they mean different things:

* **recall**: prompts the model was trained on. A high score only proves it memorised;
* **generalisation** (held-out): new phrasings of the same facts (val/test). This is what
  "understood the question" looks like.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from gptf.data import Sample, closest_jsonl, normalize_prompt, read_jsonl
from gptf.decoding.answer_workers import side_by_side_answers
from gptf.decoding.char_bags import CharBags
from gptf.decoding.numbers import numbers_intact
from gptf.decoding.taught_questions import QUESTION_SIMILARITY
from gptf.errors import DataError, path_kind
from gptf.generate import BatchAnswer, Generator, SamplingSettings, greedy_answers
from gptf.interfaces import (
    CONFIDENCE_MEASURES,
    DECLINE_TEXT,
    TAUGHT_MEASURES,
    TAUGHT_WEIGHT,
    AnswerFilter,
    content_chars,
)

FINAL_PUNCTUATION = "。．.！!？?，,；;：:…~～"
REPLACEMENT_CHAR = "\ufffd"
# A character (not a digit: 10000 is fine) four or more times in a row: 的的的的
_REPEATED_CHAR = re.compile(r"(\D)\1{3,}")
# A run of 2-20 characters three or more times in a row: 注意力注意力注意力
_REPEATED_NGRAM = re.compile(r"(.{2,20}?)\1{2,}", re.DOTALL)
#: Below this char F1 to every reference, an answer is about nothing we taught (nonsense)
MIN_CONCEPT_F1 = 0.4


# ------------------------------------------------------------------ scoring one answer


def normalize_answer(text: str) -> str:
    """Trim whitespace and the final punctuation, for exact match."""
    return text.strip().rstrip(FINAL_PUNCTUATION + " \t\r\n\u3000")


def exact_match(answer: str, reference: str) -> bool:
    return normalize_answer(answer) == normalize_answer(reference)


def f1_from_overlap(overlap: int, answer_len: int, reference_len: int) -> float:
    """F1 of two bags of characters from their common count and their sizes."""
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


# ------------------------------------------------------------------ which concept an answer is about


def sample_concept(sample: Sample) -> str:
    """The concept a question asks about: its ``concept`` field, else its reference answer."""
    return sample.concept or normalize_answer(sample.completion)


@attrs.frozen
class ConceptCheck:
    verdict: str  # "right", "declined" or "wrong"
    concept: str  # the concept the answer is about ("" for a declined or nonsense answer)
    f1: float  # char F1 to the closest reference answer


class ConceptIndex:
    """Every reference answer of the data, with the concept(s) it answers.

    :meth:`check` finds the reference closest to an answer by char F1 (ties: by ROUGE-L, then
    file order) and compares its concept with the question's. A reference shared by several
    concepts (the one fixed answer of the out-of-scope categories) stands for all of them.
    """

    def __init__(self, samples: Sequence[Sample], decline_texts: Sequence[str] = (DECLINE_TEXT,)) -> None:
        concepts: dict[str, set[str]] = {}
        for sample in samples:
            concepts.setdefault(normalize_answer(sample.completion), set()).add(sample_concept(sample))
        self.references = list(concepts)
        self.concepts = [frozenset(concepts[r]) for r in self.references]
        self._bags = CharBags(self.references)
        self.decline_texts = frozenset(normalize_answer(t) for t in decline_texts)

    @classmethod
    def from_files(cls, paths: Sequence[str | Path | None], decline_texts: Sequence[str] = (DECLINE_TEXT,)):
        """From the data files that exist among ``paths`` (None or missing ones are skipped)."""
        samples = [s for p in dict.fromkeys(str(p) for p in paths if p) if Path(p).is_file() for s in read_jsonl(p)]
        return cls(samples, decline_texts)

    def __len__(self) -> int:
        return len(self.references)

    def is_decline(self, answer: str) -> bool:
        return normalize_answer(answer) in self.decline_texts

    def nearest(self, answer: str) -> tuple[int, float]:
        """Index of the closest reference answer and its char F1 (-1, 0.0 when there is none)."""
        best, best_f1 = self._bags.closest(answer)
        if not best:
            return -1, 0.0
        if len(best) > 1:
            best.sort(key=lambda i: -rouge_l(answer, self.references[i]))
        return best[0], best_f1

    def check(self, answer: str, question_concept: str, *, declined: bool = False) -> ConceptCheck:
        """Right concept, declined, or wrong concept (about something else, or nonsense)."""
        if declined or self.is_decline(answer):
            return ConceptCheck("declined", "", 0.0)
        index, f1 = self.nearest(answer)
        if index < 0 or f1 < MIN_CONCEPT_F1:
            return ConceptCheck("wrong", "", f1)
        concepts = self.concepts[index]
        if question_concept in concepts:
            return ConceptCheck("right", question_concept, f1)
        return ConceptCheck("wrong", sorted(concepts)[0], f1)


@attrs.frozen
class AnswerScore:
    prompt: str
    reference: str
    answer: str  # what was shown: the model's answer, or the answer filter's reply
    exact: bool
    char_f1: float
    rouge_l: float
    problem: str  # "" when readable
    tokens: int
    source: str = ""  # "file:line"
    concept: str = ""  # the question's concept
    verdict: str = ""  # "right", "declined" or "wrong" concept ("" when not checked; out of scope: declined = right)
    answer_concept: str = ""  # the concept the answer is about (closest reference answer)
    numbers_intact: bool | None = None  # None: the reference has no numbers
    declined: bool = False  # the answer filter replaced the model's answer
    confidence: float | None = None  # the answer filter's measure (None: no filter)
    model_answer: str = ""  # the model's own answer, before the answer filter
    model_verdict: str = ""  # the verdict of the model's own answer (what a decline replaced)
    # the reference answer is "这个问题我还没有学过。": a question on nothing taught, whose best answer is to decline
    out_of_scope: bool = False

    @property
    def readable(self) -> bool:
        return not self.problem


def score_answer(
    sample: Sample, answer: str | BatchAnswer, tokens: int = 0, concepts: ConceptIndex | None = None
) -> AnswerScore:
    """Score one answer (a text, or a :class:`~gptf.generate.BatchAnswer` with the filter's verdict)."""
    if isinstance(answer, BatchAnswer):
        text, tokens, declined, confidence = answer.text, answer.tokens, answer.declined, answer.confidence
        model_answer = answer.model_text or answer.text
    else:
        text, declined, confidence, model_answer = answer, False, None, answer
    concept = sample_concept(sample)
    verdict = answer_concept = model_verdict = ""
    out_of_scope = False
    if concepts is not None:
        out_of_scope = concepts.is_decline(sample.completion)
        check = concepts.check(text, concept, declined=declined)
        verdict, answer_concept = check.verdict, check.concept
        if out_of_scope and verdict == "declined":  # its reference is the decline: declining is its right answer
            verdict = "right"
        model_verdict = concepts.check(model_answer, concept).verdict if declined else verdict
    return AnswerScore(
        prompt=sample.prompt,
        reference=sample.completion,
        answer=text,
        exact=exact_match(text, sample.completion),
        char_f1=char_f1(text, sample.completion),
        rouge_l=rouge_l(text, sample.completion),
        problem=readability_problem(text),
        tokens=tokens,
        source=sample.source,
        concept=concept,
        verdict=verdict,
        answer_concept=answer_concept,
        numbers_intact=numbers_intact(text, sample.completion),
        declined=declined,
        confidence=confidence,
        model_answer=model_answer,
        model_verdict=model_verdict,
        out_of_scope=out_of_scope,
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

    def verdict_share(self, verdict: str) -> float | None:
        """Share of answers with this concept verdict (None: concepts were not checked)."""
        checked = [a for a in self.answers if a.verdict]
        return sum(a.verdict == verdict for a in checked) / len(checked) if checked else None

    @property
    def right_concept(self) -> float | None:
        return self.verdict_share("right")

    @property
    def declined(self) -> float | None:
        return self.verdict_share("declined")

    @property
    def wrong_concept(self) -> float | None:
        return self.verdict_share("wrong")

    @property
    def declined_but_right(self) -> float | None:
        """Share of answers the filter declined although the model's own answer was right."""
        checked = [a for a in self.answers if a.verdict]
        return sum(a.declined and a.model_verdict == "right" for a in checked) / len(checked) if checked else None

    def _share(self, verdict: str, out_of_scope: bool) -> tuple[float | None, int]:
        """Share of this verdict among the checked answers to questions in scope (or out of it), and
        how many there are."""
        checked = [a for a in self.answers if a.verdict and a.out_of_scope == out_of_scope]
        return (sum(a.verdict == verdict for a in checked) / len(checked) if checked else None), len(checked)

    @property
    def in_scope_right(self) -> tuple[float | None, int]:
        """Right concept among the questions on taught topics (their reference is not the decline), and
        how many those are. The overall share counts the out-of-scope questions too, whose right answer is
        to decline (the teacher's val: 30 of 230)."""
        return self._share("right", out_of_scope=False)

    @property
    def out_of_scope_declined(self) -> tuple[float | None, int]:
        """Declined (their right answer) among the questions on nothing taught (their reference is the
        decline), and how many those are."""
        return self._share("right", out_of_scope=True)

    @property
    def numbers_checked(self) -> int:
        """Answers whose reference has a number."""
        return sum(a.numbers_intact is not None for a in self.answers)

    @property
    def numbers_intact(self) -> float | None:
        """Share of those whose numbers all came out whole (None: no reference has a number)."""
        checked = [a.numbers_intact for a in self.answers if a.numbers_intact is not None]
        return sum(checked) / len(checked) if checked else None

    def worst(self, n: int) -> list[AnswerScore]:
        return sorted(self.answers, key=lambda a: (a.char_f1, a.rouge_l))[:n]

    def summary(self) -> dict[str, Any]:
        (in_scope_right, in_scope), (out_of_scope_declined, out_of_scope) = (
            self.in_scope_right,
            self.out_of_scope_declined,
        )
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
            "right_concept": _round(self.right_concept),
            "declined": _round(self.declined),
            "wrong_concept": _round(self.wrong_concept),
            "declined_but_right": _round(self.declined_but_right),
            "in_scope": in_scope,
            "in_scope_right_concept": _round(in_scope_right),
            "out_of_scope": out_of_scope,
            "out_of_scope_declined": _round(out_of_scope_declined),
            "numbers_intact": _round(self.numbers_intact),
            "numbers_checked": self.numbers_checked,
            "seconds": round(self.seconds, 2),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "answers": [attrs.asdict(a) | {"readable": a.readable} for a in self.answers]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


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
    concepts: ConceptIndex | None = None,
) -> list[AnswerScore]:
    """Answer each prompt with ``settings`` (greedy for a fair score) and score it.

    Greedy answers are computed many prompts at a time (:mod:`gptf.generate`). The generator's
    answer filter applies; ``concepts``: also check which concept each answer is about."""
    if settings.temperature <= 0:
        prompts = [s.prompt for s in samples]
        answers = greedy_answers(generator, prompts, settings.max_new_tokens, on_progress=on_answer)
        return [score_answer(s, a, concepts=concepts) for s, a in zip(samples, answers, strict=True)]
    scores = []
    for done, sample in enumerate(samples, start=1):
        g = generator.generate(sample.prompt, settings, seed=0)
        answer = BatchAnswer(g.text, len(g.tokens), g.confidence, g.declined, g.model_text, None)
        scores.append(score_answer(sample, answer, concepts=concepts))
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
    concepts: ConceptIndex | None = None,
) -> SplitReport:
    """Score a JSONL file (or ``limit`` samples of it)."""
    samples = read_jsonl(path)
    chosen = sample_evenly(samples, limit)
    seen = 0.0
    if training_prompts and chosen:
        seen = sum(normalize_prompt(s.prompt) in training_prompts for s in chosen) / len(chosen)
    started = time.perf_counter()
    answers = evaluate_samples(generator, chosen, settings, on_answer, concepts)
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
        ("seen in train", "right"),
        ("exact", "right"),
        ("char F1", "right"),
        ("ROUGE-L", "right"),
        ("readable", "right"),
        ("concept right / declined / wrong", "right"),
        ("numbers intact", "right"),
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
            "-" if r.right_concept is None else f"{r.right_concept:.1%} / {r.declined:.1%} / {r.wrong_concept:.1%}",
            "-" if r.numbers_intact is None else f"{r.numbers_intact:.0%} of {r.numbers_checked}",
            f"{r.seconds:.1f}s",
        )
    return table


def scope_lines(reports: Sequence[SplitReport]) -> list[str]:
    """Right concept on the questions about taught topics, and how often the out-of-scope ones (whose
    reference is the decline) were declined, per split that has both kinds."""
    lines = []
    for r in reports:
        (right, taught), (declined, untaught) = r.in_scope_right, r.out_of_scope_declined
        if right is not None and declined is not None:
            lines.append(
                f"{r.name}: right concept {right:.1%} of the {taught} questions on taught topics; "
                f"{declined:.1%} of the {untaught} out-of-scope questions declined (right: their reference declines)"
            )
    return lines


def worst_table(report: SplitReport, n: int) -> Table:
    table = Table(title=f"worst {n} answers on {report.name} (lowest char F1)", title_justify="left")
    for column in ("prompt", "reference", "answer", "F1", "concept", "problem"):
        table.add_column(column, overflow="fold")
    for a in report.worst(n):
        table.add_row(
            a.prompt, a.reference, a.answer or "(empty)", f"{a.char_f1:.2f}", a.verdict or "-", a.problem or "-"
        )
    return table


def print_report(console: Console, reports: Sequence[SplitReport], worst: int = 5) -> None:
    console.print(scores_table(reports))
    for line in scope_lines(reports):
        console.print(line, highlight=False)
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
    concepts: ConceptIndex | None = None,
) -> list[SplitReport]:
    """Score every file that exists (a missing one is reported and skipped), with a progress bar.

    ``concepts``: the reference answers to check concepts against (see :func:`concepts_for`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    training_prompts = prompt_set(train_path) if train_path and Path(train_path).is_file() else None
    reports = []
    for item in files:
        if not Path(item.path).is_file():
            if Path(item.path).exists():
                why = f"is {path_kind(Path(item.path))}, not a JSONL file"
            elif (close := closest_jsonl(Path(item.path))) is not None:
                why = f"not found (did you mean {close}?)"
            else:
                why = "not found (run gptf eval where it exists)"
            console.print(f"[yellow]skipped {item.name}: {item.path} {why}[/]")
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
                concepts=concepts,
                on_answer=lambda done, task=task: progress.update(task, completed=done),
            )
        reports.append(report)
        if report.evaluated < report.total:
            console.print(
                f"{item.name}: scored a seeded random sample of {report.evaluated} of {report.total} prompts",
                highlight=False,
            )
    return reports


def decoding_name(beams: int, beam_choice: str = "likelihood", memory: bool = False) -> str:
    """How answers at temperature 0 are chosen, for reports: "greedy", "beam search, 4 beams", or
    "beam search, 4 beams, chosen by taught questions", and ", with a memory of the taught answers"
    where one votes (``generation.memory``)."""
    with_memory = ", with a memory of the taught answers" if memory else ""
    if beams == 1:
        return f"greedy{with_memory}"
    chosen = ", chosen by taught questions" if beam_choice == "taught_question" else ""
    return f"beam search, {beams} beams{chosen}{with_memory}"


def generator_decoding(generator: Generator) -> str:
    """:func:`decoding_name` of how ``generator`` answers."""
    return decoding_name(generator.beams, generator.beam_choice, generator.memory is not None)


def decline_texts(generator: Generator) -> list[str]:
    """Texts that count as "declined": the data's (:data:`DECLINE_TEXT`) and the filter's reply."""
    texts = [DECLINE_TEXT]
    if generator.answer_filter is not None:
        texts.append(generator.answer_filter.reply)
    return texts


def concepts_for(
    data: Any, generator: Generator, extra: Sequence[str | Path] = (), *, with_test: bool = True
) -> ConceptIndex:
    """The reference answers of the run's train, val (and test) files, and of ``extra`` files."""
    paths = [data.train, data.val, *([data.test] if with_test else []), *extra]
    return ConceptIndex.from_files(paths, decline_texts(generator))


def evaluate_after_training(
    generator: Generator, recipe: Any, console: Console, out: Path, limit: int = 0
) -> SplitReport | None:
    """The check that ends ``gptf run``: greedy answers to the held-out val prompts."""
    if not recipe.data.val or not Path(recipe.data.val).is_file():
        return None
    g = recipe.generation
    settings = SamplingSettings(max_new_tokens=g.max_new_tokens, temperature=0.0)
    decoding = generator_decoding(generator)
    console.rule(f"evaluation on val (held-out prompts, {decoding})")
    files = [EvalFile("val", "generalisation", recipe.data.val, limit)]
    concepts = concepts_for(recipe.data, generator)
    with side_by_side_answers():
        reports = evaluate_files(generator, files, settings, console, train_path=recipe.data.train, concepts=concepts)
    print_report(console, reports, worst=3)
    from gptf.train.run_files import write_json

    write_json(out, report_json(reports, decoding=decoding, max_new_tokens=settings.max_new_tokens))
    return reports[0]


# ------------------------------------------------------------------ calibrating the answer filter
# The answer filter declines an answer whose confidence is below a threshold. Which threshold?
# One that makes the answers on the *val* questions (never test: test is for the final report)
# as trustworthy as possible. An answer is trustworthy when it is
#
#   right (about the question's concept), or honestly declined: declined, and the model's own
#   answer would not have been right (wrong, or the model said the decline text itself).
#
# Without a filter that share is just the right-concept rate; declining everything makes it the
# wrong-concept rate. The best threshold lies in between, or nowhere: then leave the filter off.
#
# One limit on top: the filter may hide at most ``max_right_lost`` (default 1 in 10) of the right
# answers. A weak model is wrong so often that declining nearly everything scores best; but then
# it also declines most of what it was taught, and a class sees a model that forgot its lessons.
#
# And one aim: show at most ``max_wrong_shown`` (default 8%) wrong answers, where a threshold within
# that limit does (and is no less trustworthy than no filter). A class takes a wrong answer it is
# shown for a fact; a declined one it only misses. 8%, not the 10% the teacher run aims for: the
# threshold is chosen on val's 230 answers, and on test the wrong answers shown came out between 1.5
# points below and 4.6 above val in eight teacher runs (1.3 above on average; README "A memory of what it
# was taught").


@attrs.frozen
class ThresholdRow:
    """What one threshold does to the val answers (shares of all answers)."""

    threshold: float  # decline below this (-inf: the filter is off)
    declined: float  # declined, by the filter or by the model itself
    right_declined: float  # right answers the filter declined (the price)
    wrong_kept: float  # wrong answers still shown
    trustworthy: float  # right and shown, or honestly declined


def threshold_rows(confidences: Sequence[float], verdicts: Sequence[str]) -> list[ThresholdRow]:
    """Every threshold that changes something: off, then between each two neighbouring confidences.

    ``verdicts``: the concept verdict of each answer *without* the filter (right/declined/wrong)."""
    n = len(confidences)
    finite = sorted({c for c in confidences if math.isfinite(c)})
    candidates = [-math.inf] + [round((a + b) / 2, 4) for a, b in itertools.pairwise(finite)]
    if finite:
        candidates.append(round(finite[-1] + 0.001, 4))
    rows = []
    for t in dict.fromkeys(candidates):
        cut = [c < t for c in confidences]
        right_declined = sum(d and v == "right" for d, v in zip(cut, verdicts, strict=True))
        wrong_kept = sum(not d and v == "wrong" for d, v in zip(cut, verdicts, strict=True))
        declined = sum(d or v == "declined" for d, v in zip(cut, verdicts, strict=True))
        rows.append(
            ThresholdRow(t, declined / n, right_declined / n, wrong_kept / n, (n - right_declined - wrong_kept) / n)
        )
    return rows


#: The share of the right answers the filter may decline (``gptf eval --max-right-lost``).
MAX_RIGHT_LOST = 0.1
#: The share of wrong answers the filter aims to show at most (``gptf eval --max-wrong-shown``).
MAX_WRONG_SHOWN = 0.08


def best_threshold(
    rows: Sequence[ThresholdRow], max_declined: float = 1.0, max_right_lost: float = 1.0, max_wrong_shown: float = 1.0
) -> ThresholdRow:
    """The most trustworthy row that declines at most ``max_declined`` of the answers and at
    most ``max_right_lost`` of the right ones; among equals, the one that declines least. Where some
    of those rows show at most ``max_wrong_shown`` wrong answers and are no less trustworthy than no
    filter, the most trustworthy of them. ``rows[0]`` must be the filter off (as :func:`threshold_rows`
    gives them)."""
    right = 1.0 - rows[0].wrong_kept - rows[0].declined if rows else 0.0  # right without a filter
    allowed = [
        r for r in rows if r.declined <= max_declined + 1e-9 and r.right_declined <= max_right_lost * right + 1e-9
    ] or list(rows[:1])
    few_wrong = [
        r for r in allowed if r.wrong_kept <= max_wrong_shown + 1e-9 and r.trustworthy >= rows[0].trustworthy - 1e-9
    ]
    return max(few_wrong or allowed, key=lambda r: (round(r.trustworthy, 9), -r.declined))


def separation(confidences: Sequence[float], verdicts: Sequence[str]) -> float | None:
    """AUROC: the chance that a right answer is more confident than a wrong one (0.5 = no better
    than a coin; ties count half). None when there are no right or no wrong answers."""
    right = [c for c, v in zip(confidences, verdicts, strict=True) if v == "right"]
    wrong = [c for c, v in zip(confidences, verdicts, strict=True) if v == "wrong"]
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


@attrs.frozen
class MeasureCalibration:
    measure: str  # a CONFIDENCE_MEASURES name, or "<filter>" for the recipe's own filter
    auroc: float | None
    best: ThresholdRow
    rows: list[ThresholdRow]


@attrs.frozen
class Calibration:
    path: str  # the val file
    answers: int
    right: float  # without a filter
    declined: float
    wrong: float
    measures: list[MeasureCalibration]
    chosen: MeasureCalibration
    filter_spec: dict[str, Any] | str  # what generation.answer_filter should be ("none": leave it off)
    max_declined: float = 1.0
    max_right_lost: float = MAX_RIGHT_LOST
    decoding: str = "greedy"  # how the val answers were chosen (decoding_name)
    max_wrong_shown: float = MAX_WRONG_SHOWN

    @property
    def helps(self) -> bool:
        return self.chosen.best.threshold > -math.inf

    def describe(self) -> str:
        """One line: what was chosen, and what it does to the val answers."""
        b = self.chosen.best
        if not self.helps:
            return f"off: no threshold makes val more trustworthy than no filter ({self.right:.1%} right)"
        return (
            f"decline below {b.threshold:.3f} ({self.chosen.measure}), chosen on val: right or honestly declined "
            f"{b.trustworthy:.1%} vs {self.right + self.declined:.1%} without the filter; wrong answers shown "
            f"{self.wrong:.1%} -> {b.wrong_kept:.1%}, right answers declined {b.right_declined:.1%}"
        )

    def summary(self) -> dict[str, Any]:
        """The choice in a few numbers (for run.json)."""
        b = self.chosen.best
        return {
            "answer_filter": self.filter_spec,
            "val_without_filter": {"right": round(self.right, 4), "wrong": round(self.wrong, 4)},
            "val_with_filter": {
                "trustworthy": round(b.trustworthy, 4),
                "wrong_kept": round(b.wrong_kept, 4),
                "right_declined": round(b.right_declined, 4),
                "declined": round(b.declined, 4),
            },
            "max_right_lost": self.max_right_lost,
            "max_wrong_shown": self.max_wrong_shown,
        }

    def to_json(self) -> dict[str, Any]:
        def row(r: ThresholdRow) -> dict[str, Any]:  # JSON has no -inf: the "off" threshold is null
            return {k: round(v, 4) if math.isfinite(v) else None for k, v in attrs.asdict(r).items()}

        return {
            "val": self.path,
            "answers": self.answers,
            "without_filter": {
                "right": round(self.right, 4),
                "declined": round(self.declined, 4),
                "wrong": round(self.wrong, 4),
            },
            "measures": [
                {"measure": m.measure, "auroc": _round(m.auroc), "best": row(m.best), "curve": [row(r) for r in m.rows]}
                for m in self.measures
            ],
            "max_declined": self.max_declined,
            "max_right_lost": self.max_right_lost,
            "max_wrong_shown": self.max_wrong_shown,
            "chosen": self.chosen.measure,
            "answer_filter": self.filter_spec,
            "question_similarity": QUESTION_SIMILARITY,  # how taught_question compared (a threshold's meaning)
            "taught_weight": TAUGHT_WEIGHT,  # min_logprob_taught's weight of taught_question (the same)
        }


def calibrate(
    generator: Generator,
    samples: Sequence[Sample],
    concepts: ConceptIndex,
    max_new_tokens: int,
    *,
    path: str = "",
    recipe_filter: AnswerFilter | None = None,
    recipe_filter_name: str = "",
    max_declined: float = 1.0,
    max_right_lost: float = MAX_RIGHT_LOST,
    max_wrong_shown: float = MAX_WRONG_SHOWN,
    reply: str | None = None,
    on_answer: Callable[[int], None] | None = None,
) -> Calibration:
    """Answer ``samples`` (the val questions) greedily without a filter, then find, for each
    confidence measure, the threshold that makes the answers most trustworthy (the taught_question
    measures only if ``generator.taught`` knows the training questions).

    ``recipe_filter``: the recipe's own filter, if it is not the built-in ``confidence`` one; its
    :meth:`~gptf.interfaces.AnswerFilter.confidence` is calibrated beside the built-in measures.
    ``max_declined``: never choose a threshold that declines more than this share of val;
    ``max_right_lost``: nor one that declines more than this share of the right answers;
    ``max_wrong_shown``: where a threshold shows at most this share of wrong answers, one of those
    (and a measure that has one before a measure that has none)
    ``reply``: what the chosen filter says (default: ``recipe_filter``'s, else :data:`DECLINE_TEXT`)."""
    unfiltered = Generator(
        generator.model,
        generator.tokenizer,
        generator.recipe_constraints,
        use_cache=generator.use_cache,
        measures=True,
        draft=generator.draft,
        draft_bank=generator.draft_bank,
        answered=generator.answered,
        beams=generator.beams,
        taught=generator.taught,
        beam_choice=generator.beam_choice,
        memory=generator.memory,
    )
    answers = greedy_answers(unfiltered, [s.prompt for s in samples], max_new_tokens, on_progress=on_answer)
    verdicts = [concepts.check(a.text, sample_concept(s)).verdict for s, a in zip(samples, answers, strict=True)]
    finished = [a.answer for a in answers]
    # the taught_question measures only where the generator knows the training questions
    available = [m for m in CONFIDENCE_MEASURES if unfiltered.taught is not None or m not in TAUGHT_MEASURES]
    scored: dict[str, list[float]] = {
        m: [f.measure(m) if f is not None else -math.inf for f in finished] for m in available
    }
    if recipe_filter is not None:
        scored["<filter>"] = [float(recipe_filter.confidence(f)) if f is not None else -math.inf for f in finished]
    measures = []
    for name, confidences in scored.items():
        rows = threshold_rows(confidences, verdicts)
        best = best_threshold(rows, max_declined, max_right_lost, max_wrong_shown)
        measures.append(MeasureCalibration(name, separation(confidences, verdicts), best, rows))
    chosen = max(
        measures,
        key=lambda m: (m.best.wrong_kept <= max_wrong_shown + 1e-9, round(m.best.trustworthy, 9), m.auroc or 0.0),
    )
    n = max(len(samples), 1)
    if reply is None:
        reply = recipe_filter.reply if recipe_filter is not None else DECLINE_TEXT
    spec: dict[str, Any] | str = "none"
    if chosen.best.threshold > -math.inf:
        if chosen.measure == "<filter>":
            spec = {"name": recipe_filter_name, "threshold": chosen.best.threshold}
        else:
            spec = {"name": "confidence", "measure": chosen.measure, "threshold": chosen.best.threshold}
            if reply != DECLINE_TEXT:
                spec["reply"] = reply
    return Calibration(
        path,
        len(samples),
        verdicts.count("right") / n,
        verdicts.count("declined") / n,
        verdicts.count("wrong") / n,
        measures,
        chosen,
        spec,
        max_declined,
        max_right_lost,
        generator_decoding(generator),
        max_wrong_shown,
    )


def calibration_tables(calibration: Calibration, curve_points: int = 10) -> list[Table]:
    """The measures side by side, then the chosen measure's curve (about ``curve_points`` rows)."""
    c = calibration
    measures = Table(
        title=f"answer filter calibration on {c.path} ({c.answers} val questions, {c.decoding}; without a filter: "
        f"right {c.right:.1%}, declined {c.declined:.1%}, wrong {c.wrong:.1%})",
        title_justify="left",
    )
    for column in ("measure", "separation (AUROC)", "best threshold", "declined", "right declined", "wrong shown",
                   "right or honestly declined"):  # fmt: skip
        measures.add_column(column, justify="left" if column == "measure" else "right")
    for m in c.measures:
        b = m.best
        measures.add_row(
            m.measure + (" (chosen)" if m is c.chosen else ""),
            "-" if m.auroc is None else f"{m.auroc:.3f}",
            "off" if b.threshold == -math.inf else f"{b.threshold:.3f}",
            f"{b.declined:.1%}",
            f"{b.right_declined:.1%}",
            f"{b.wrong_kept:.1%}",
            f"{b.trustworthy:.1%}",
        )
    curve = Table(title=f"{c.chosen.measure}: decline below the threshold", title_justify="left")
    for column in ("threshold", "declined", "right declined", "wrong shown", "right or honestly declined"):
        curve.add_column(column, justify="right")
    rows = c.chosen.rows
    step = max(1, len(rows) // curve_points)
    shown = dict.fromkeys([*rows[::step], rows[-1], c.chosen.best])
    for r in sorted(shown, key=lambda r: r.threshold):
        mark = " <- chosen" if r is c.chosen.best else ""
        curve.add_row(
            ("off" if r.threshold == -math.inf else f"{r.threshold:.3f}") + mark,
            f"{r.declined:.1%}",
            f"{r.right_declined:.1%}",
            f"{r.wrong_kept:.1%}",
            f"{r.trustworthy:.1%}",
        )
    return [measures, curve]


def calibrate_on_val(
    generator: Generator,
    recipe: Any,
    max_new_tokens: int,
    *,
    max_declined: float = 1.0,
    max_right_lost: float = MAX_RIGHT_LOST,
    max_wrong_shown: float = MAX_WRONG_SHOWN,
) -> Calibration:
    """:func:`calibrate` on the recipe's val file (``data.val``); test is never read. The recipe's
    answer filter, if it is not the built-in ``confidence`` one, is calibrated beside the built-in
    measures (``generator`` must then have it); the chosen filter keeps the recipe's ``reply``."""
    val = recipe.data.val
    if not val or not Path(val).is_file():
        raise DataError(
            f"calibrating the answer filter needs the run's val file (data.val = {val}), and it is not here",
            hint="run gptf eval --calibrate from the folder you trained in",
        )
    concepts = concepts_for(recipe.data, generator, with_test=False)  # val only: test is never read
    spec = recipe.generation.answer_filter
    own = generator.answer_filter if spec.name not in ("none", "confidence") else None
    with side_by_side_answers():
        return calibrate(
            generator,
            read_jsonl(val),
            concepts,
            max_new_tokens,
            path=val,
            recipe_filter=own,
            recipe_filter_name=spec.name,
            max_declined=max_declined,
            max_right_lost=max_right_lost,
            max_wrong_shown=max_wrong_shown,
            reply=spec.params.get("reply"),
        )
