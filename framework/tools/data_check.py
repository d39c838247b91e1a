"""Check prompt/completion JSONL files before training: format, lengths, duplicates, leakage.

Usage from Python::

    from gptf.tools.data_check import check_files, format_report
    report = check_files([Path("data/train.jsonl"), Path("data/val.jsonl")], encode=tok_encode)
    print(format_report(report))
    if not report.ok: ...

What is checked
---------------
* Lines are read by the trainer's own reader (:func:`gptf.data.parse_jsonl`), so this check
  accepts and refuses exactly the files ``gptf run`` does: every line must be a JSON object
  with string fields ``prompt`` and ``completion`` holding some non-whitespace text. Other
  fields (``concept`` ...) are allowed. Each bad line gives one error ``file:line: message``.
  Blank lines are skipped; a file with no non-blank line is an error.
* Per file: line and sample counts, distinct prompts and completions, lengths in characters
  and (when ``encode`` is given) in tokens, how many samples exceed ``seq_len`` tokens, and
  exact duplicate samples (same prompt and same completion) with their line numbers.
  Duplicates are reported but are not errors.
* Leakage between every pair of files (never inside one file): a prompt of one file that
  (a) equals a prompt of the other after normalisation, or (b) is a near-duplicate of it:
  character-trigram Jaccard similarity of the normalised prompts >= ``NEAR_DUP_THRESHOLD``.
  Completions are not compared: held-out splits deliberately reuse the canonical answers
  of concepts that are in train, and only the wording of the question is held out.

Token count
-----------
``encode(text)`` must return the token ids of ``text`` without special tokens (the
``encode`` of a gptf tokenizer). Each sample is counted exactly as ``gptf.data.encode_sample``
lays it out for training::

    1 + len(encode(format_prompt(prompt))) + len(encode(completion)) + 1

that is ``<bos>``, the prompt part ``用户:{prompt}\\n助手:`` (``format_prompt`` also drops the
prompt's spaces, as the trainer does), the answer, and ``<eos>``. The prompt part and the
answer are encoded separately, as in training. A sample longer than ``seq_len`` would be
truncated, or refused, by the trainer.

Normalisation
-------------
Traditional characters become simplified (``gptf.data.normalize_prompt``: the model is asked them so),
NFKC (full-width letters, digits and the ideographic space become ASCII), then every
whitespace character, every ASCII punctuation or symbol character and every Unicode
punctuation character (，。？！：、“”《》… ) is dropped, then the text is case-folded.
So "什么是RoPE？", "什么是 rope?", "什么是ＲｏＰＥ" and "什麼是RoPE" are the same prompt.

Threshold
---------
0.7 was chosen by looking at real pairs. Padding a question with a word or two
("什么是旋转位置编码" vs "请问什么是旋转位置编码", 0.78; "...编码" vs "...编码呢", 0.88) stays
above it, while genuine rewordings of the same question score far below it
("什么是RoPE" vs "RoPE是什么", 0.25; "旋转位置编码是什么" vs "RoPE在模型里起什么作用", 0.0),
and so do different questions that share a template ("什么是top-k采样" vs "什么是top-p采样", 0.40).
"""

from __future__ import annotations

import statistics
import string
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gptf.data import Sample, normalize_prompt, parse_jsonl, sample_length
from gptf.errors import DataError

NEAR_DUP_THRESHOLD = 0.7


@dataclass
class LengthStats:
    """Summary of a list of lengths (characters or tokens)."""

    min: int
    mean: float
    median: float
    p95: int
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> LengthStats | None:
        """Stats of `values`, or None when there are none. p95 uses the nearest-rank method."""
        if not values:
            return None
        ordered = sorted(values)
        rank = max(1, -(-95 * len(ordered) // 100))  # ceil(0.95 * n), 1-based
        return cls(
            min=ordered[0],
            mean=statistics.fmean(ordered),
            median=statistics.median(ordered),
            p95=ordered[rank - 1],
            max=ordered[-1],
        )


@dataclass
class FileReport:
    """Everything measured about one file."""

    path: str
    lines: int = 0
    valid: int = 0
    distinct_prompts: int = 0
    distinct_completions: int = 0
    chars: LengthStats | None = None  # len(prompt) + len(completion)
    tokens: LengthStats | None = None  # full sequence incl. <bos>/<eos>; None without encode
    over_seq_len: int = 0  # samples with more than seq_len tokens
    duplicates: list[list[int]] = field(default_factory=list)  # line numbers of each group
    samples: list[Sample] = field(default_factory=list, repr=False)


@dataclass
class Leak:
    """A prompt of one file that also appears (or nearly) in another file."""

    file_a: str
    line_a: int
    file_b: str
    line_b: int
    reason: str  # "same prompt" or "near duplicate"
    score: float  # trigram Jaccard similarity of the normalised prompts (1.0 for same prompt)
    prompt_a: str = ""
    prompt_b: str = ""

    def __str__(self) -> str:
        return (
            f"{self.file_a}:{self.line_a} ~ {self.file_b}:{self.line_b} "
            f"({self.reason}, {self.score:.2f}): {self.prompt_a!r} ~ {self.prompt_b!r}"
        )


@dataclass
class DataReport:
    """Result of check_files: per-file reports, errors and leaks."""

    files: list[FileReport]
    errors: list[str]
    leaks: list[Leak]
    seq_len: int
    threshold: float = NEAR_DUP_THRESHOLD

    @property
    def ok(self) -> bool:
        """True when there is no error and no leakage (duplicates alone do not fail a check)."""
        return not self.errors and not self.leaks


def normalize(text: str) -> str:
    """Traditional characters as simplified (as the model sees them), NFKC, drop whitespace and
    punctuation (ASCII and Chinese), case-fold."""
    text = unicodedata.normalize("NFKC", normalize_prompt(text))
    kept = [
        ch
        for ch in text
        if not ch.isspace() and ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    ]
    return "".join(kept).casefold()


def trigrams(text: str) -> frozenset[str]:
    """Character trigrams of an (already normalised) text; a shorter text is its own gram."""
    if len(text) < 3:
        return frozenset({text}) if text else frozenset()
    return frozenset(text[i : i + 3] for i in range(len(text) - 2))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b|, 0.0 for two empty sets."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _read_file(path: Path, encode: Callable[[str], list[int]] | None, seq_len: int, errors: list[str]) -> FileReport:
    """Read one file with the trainer's own reader, and fill in its statistics."""
    report = FileReport(path=str(path))
    try:
        contents = parse_jsonl(path)
    except DataError as error:
        errors.append(str(error))
        return report
    report.lines = contents.lines
    errors.extend(contents.errors)
    if not contents.samples and not contents.errors:
        errors.append(f"{path}: empty file")
        return report
    samples = report.samples = contents.samples
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for sample in samples:
        groups[(sample.prompt, sample.completion)].append(sample.line)
    report.valid = len(samples)
    report.distinct_prompts = len({s.prompt for s in samples})
    report.distinct_completions = len({s.completion for s in samples})
    report.duplicates = [numbers for numbers in groups.values() if len(numbers) > 1]
    report.chars = LengthStats.of([len(s.prompt) + len(s.completion) for s in samples])
    if encode is not None and samples:
        counts = [sample_length(encode, s) for s in samples]
        report.tokens = LengthStats.of(counts)
        report.over_seq_len = sum(count > seq_len for count in counts)
    return report


def _find_leaks(a: FileReport, b: FileReport, threshold: float) -> list[Leak]:
    """Prompts of file `b` that equal or nearly equal a prompt of file `a`."""
    norm_a = [normalize(s.prompt) for s in a.samples]
    grams_a = [trigrams(n) for n in norm_a]
    index: dict[str, list[int]] = defaultdict(list)  # trigram -> positions in a.samples
    for position, grams in enumerate(grams_a):
        for gram in grams:
            index[gram].append(position)
    leaks = []
    for sample in b.samples:
        norm_b = normalize(sample.prompt)
        grams_b = trigrams(norm_b)
        candidates = {position for gram in grams_b for position in index.get(gram, ())}
        for position in sorted(candidates):
            if norm_a[position] == norm_b:
                reason, score = "same prompt", 1.0
            else:
                score = jaccard(grams_a[position], grams_b)
                if score < threshold:
                    continue
                reason = "near duplicate"
            other = a.samples[position]
            leaks.append(Leak(a.path, other.line, b.path, sample.line, reason, score, other.prompt, sample.prompt))
    return leaks


def check_files(
    paths: list[Path],
    encode: Callable[[str], list[int]] | None = None,
    seq_len: int = 128,
    threshold: float = NEAR_DUP_THRESHOLD,
) -> DataReport:
    """Check JSONL files of {"prompt", "completion"} samples; see the module docstring.

    `encode(text)` returns token ids without special tokens; each sample is counted as
    1 + len(encode(format_prompt(prompt))) + len(encode(completion)) + 1, the length of the
    sequence gptf.data.encode_sample builds (<bos>, prompt part, answer, <eos>).
    Leakage is looked for between every pair of different files, in the order given.
    """
    errors: list[str] = []
    files = [_read_file(Path(path), encode, seq_len, errors) for path in paths]
    leaks: list[Leak] = []
    for i, first in enumerate(files):
        for second in files[i + 1 :]:
            if Path(first.path).resolve() != Path(second.path).resolve():
                leaks.extend(_find_leaks(first, second, threshold))
    return DataReport(files=files, errors=errors, leaks=leaks, seq_len=seq_len, threshold=threshold)


def _fmt_stats(stats: LengthStats | None) -> str:
    if stats is None:
        return "-"
    return f"min {stats.min}, mean {stats.mean:.1f}, median {stats.median:g}, p95 {stats.p95}, max {stats.max}"


def _cut(rows: list[str], max_items: int) -> list[str]:
    """The first `max_items` rows, plus a note on how many were left out."""
    if len(rows) <= max_items:
        return rows
    return [*rows[:max_items], f"  ... {len(rows) - max_items} more not shown"]


def format_report(report: DataReport, max_items: int = 50) -> str:
    """Plain-text rendering of a report; long lists are cut after `max_items` entries."""
    out: list[str] = []
    for f in report.files:
        out.append(f"{f.path}")
        out.append(f"  lines {f.lines}, valid samples {f.valid}")
        out.append(f"  distinct prompts {f.distinct_prompts}, distinct completions {f.distinct_completions}")
        out.append(f"  chars  (prompt+completion): {_fmt_stats(f.chars)}")
        if f.tokens is not None:
            out.append(f"  tokens (with <bos>/<eos>):  {_fmt_stats(f.tokens)}")
            out.append(f"  over seq_len {report.seq_len}: {f.over_seq_len}")
        out.append(f"  duplicate samples: {len(f.duplicates)} group(s)")
        groups = [f"    lines {', '.join(map(str, group))}" for group in f.duplicates]
        out.extend(_cut(groups, max_items))
    out.append(f"errors: {len(report.errors)}")
    out.extend(_cut([f"  {error}" for error in report.errors], max_items))
    out.append(
        f"leaks between files: {len(report.leaks)} (same normalised prompt, or trigram Jaccard >= {report.threshold})"
    )
    out.extend(_cut([f"  {leak}" for leak in report.leaks], max_items))
    out.append("OK" if report.ok else "FAILED")
    return "\n".join(out)
