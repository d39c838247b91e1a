"""How a question/answer pair becomes token ids and training targets.

Every sample is laid out as

    <bos> 用户:{prompt}\n助手: {completion} <eos>
    └──────── prompt part ──────┘└── answer part ──┘

and the model is trained to predict the *next* token at every position, but the loss
only counts predictions inside the answer part (and its <eos>): we teach it to answer,
not to invent questions. All of that lives in this one file: the one JSONL reader
(:func:`parse_jsonl`), the template, tokenisation, the seeded data order, padded
micro-batches, and prompt augmentation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import attrs
import opencc
import torch

from gptf.errors import DataError, closest_path, path_kind
from gptf.interfaces import Tokenizer

PROMPT_TEMPLATE = "用户:{prompt}\n助手:"
IGNORE = -100  # target value that cross-entropy skips
MAX_ERRORS_SHOWN = 20

# Whitespace of every kind (spaces, full-width spaces, tabs, line breaks, no-break spaces), control
# characters and the invisible "format" characters that copying from web pages and chat apps brings
# along (zero-width spaces and joiners, word joiner, byte-order mark, soft hyphen, direction marks).
_INVISIBLE = re.compile(r"[\s\x00-\x1f\x7f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]+")
# Full-width letters, digits and arithmetic signs (ＲｏＰＥ, ５＋３＝？ typed with a Chinese input method's
# full-width mode) -> their ASCII forms. Chinese punctuation (，？！：（）) stays: the data uses it.
_FULL_WIDTH = str.maketrans(
    {chr(0xFF00 + ord(c) - 0x20): c for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+-*/=<>%"}
)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Traditional characters -> simplified, by OpenCC's "hk2s" tables (Hong Kong's variant characters, 衞 -> 卫,
# then "t2s": characters, and phrases where a character has several simplified forms): 什麼是注意力機制 is
# asked as 什么是注意力机制. Simplified text stays as it is (none of the 20,472 prompts in data/ changes;
# "tw2s" would change three: 著称 -> 着称). Words stay words: 軟體 becomes 软体, not 软件.
_TO_SIMPLIFIED = opencc.OpenCC("hk2s")


def normalize_prompt(prompt: str) -> str:
    """The question as the model sees it, at training and at question time alike: spaces dropped
    (as the original release did: "什么是 RoPE" and "什么是RoPE" are the same question), and so are
    line breaks, tabs and invisible characters (a pasted question may carry a line break, which
    would otherwise end the ``用户:`` line of the template early); full-width letters, digits and
    arithmetic signs become ASCII (ＲｏＰＥ -> RoPE, ５×９ -> 5×9); traditional characters become
    simplified (什麼是過擬合 -> 什么是过拟合: a student in Taiwan or Hong Kong asks what was taught)."""
    text = _INVISIBLE.sub("", prompt).translate(_FULL_WIDTH)
    if _LONE_SURROGATE.search(text):  # not text OpenCC can read (half a character): refused later, by name
        return text
    return _TO_SIMPLIFIED.convert(text)


def format_prompt(prompt: str) -> str:
    return PROMPT_TEMPLATE.format(prompt=normalize_prompt(prompt))


@attrs.frozen
class Sample:
    prompt: str
    completion: str
    source: str = ""  # "file:line", for messages
    concept: str = ""  # the optional "concept" field: which taught idea the question asks about

    @property
    def line(self) -> int:
        """The line number in its file (0 when not read from a file)."""
        _, _, number = self.source.rpartition(":")
        return int(number) if number.isdigit() else 0


@attrs.frozen
class JsonlContents:
    """A JSONL file as read: the good samples, and one ``file:line: message`` per bad line."""

    path: Path
    samples: list[Sample]
    errors: list[str]
    lines: int  # lines in the file, blank ones included


def parse_jsonl(path: str | Path) -> JsonlContents:
    """Read ``{"prompt": ..., "completion": ...}`` lines, collecting every problem.

    This is the one JSONL reader of gptf (``gptf run``, ``gptf data check``, ``gptf eval``), so
    they accept and refuse exactly the same files. UTF-8 with or without a byte-order mark;
    ``\n`` or ``\r\n`` line ends; lines are split on ``\n`` only (``str.splitlines`` would
    also cut at U+2028 or U+0085 *inside* a JSON string); blank lines are skipped; other
    fields are allowed. Raises :class:`DataError` only when the file cannot be read at all;
    an empty file gives no samples and no errors.
    """
    path = Path(path)
    if not path.exists():
        close = closest_jsonl(path)
        raise DataError(f"data file not found: {path}" + (f" (did you mean {close}?)" if close is not None else ""))
    if not path.is_file():
        raise DataError(f"{path} is {path_kind(path)}, not a JSONL file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from exc
    key = (str(path), hashlib.blake2b(raw, digest_size=16).digest())
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse_text(path, raw)
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.clear()
        _PARSED[key] = parsed
    samples, errors, lines = parsed
    return JsonlContents(path, list(samples), list(errors), lines)


# A run reads data/train.jsonl ~6 times (the data, the taught questions, the draft bank, the concepts
# of the evaluation...), 0.2-0.3 s each to parse its 20,000 lines. Each file's lines are parsed once
# and kept for as long as it holds the same bytes (its hash: 3 ms for the 2.4 MB).
_PARSED: dict[tuple[str, bytes], tuple[tuple[Sample, ...], tuple[str, ...], int]] = {}
_PARSED_KEPT = 8


def _parse_text(path: Path, raw: bytes) -> tuple[tuple[Sample, ...], tuple[str, ...], int]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # (as a file opened as text reads it)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    samples: list[Sample] = []
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        sample, problem = _parse_line(line, where)
        if problem:
            errors.append(f"{where}: {problem}")
        else:
            samples.append(sample)  # type: ignore[arg-type]
    return tuple(samples), tuple(errors), len(lines)


def closest_jsonl(path: Path) -> Path | None:
    """For a data file that is not there: the JSONL file of the closest name nearby (a typo), if any."""
    return closest_path(path, lambda p: p.suffix == ".jsonl" and p.is_file())


def read_jsonl(path: str | Path) -> list[Sample]:
    """The samples of a JSONL file; every bad line is reported in one :class:`DataError`."""
    contents = parse_jsonl(path)
    errors = contents.errors
    if errors:
        shown = "\n".join(f"  {e}" for e in errors[:MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise DataError(f"{contents.path}: {len(errors)} bad line(s):\n{shown}{more}")
    if not contents.samples:
        raise DataError(f"{contents.path}: no samples (the file is empty)")
    return contents.samples


class _NotStrictJson(ValueError):
    """What Python's json module accepts but JSON does not: NaN/Infinity, or a key given twice."""


def _no_constants(name: str) -> None:
    raise _NotStrictJson(f"{name} is not JSON")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:  # json.loads would silently keep the last one
            raise _NotStrictJson(f"the key {key!r} appears twice")
        record[key] = value
    return record


def json_type(value: Any) -> str:
    """A value's type in JSON's words (what the person who wrote the line sees), not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _parse_line(line: str, where: str) -> tuple[Sample | None, str | None]:
    try:
        record = json.loads(line, parse_constant=_no_constants, object_pairs_hook=_no_repeated_keys)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg}, column {exc.colno})"
    except _NotStrictJson as exc:
        return None, f"not valid JSON ({exc})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {json_type(record)}"
    problem = next((p for p in (_field_problem(record, k) for k in ("prompt", "completion")) if p), None)
    if problem:
        return None, problem
    concept = record.get("concept")
    return Sample(record["prompt"], record["completion"], where, concept if isinstance(concept, str) else ""), None


def _field_problem(record: dict, key: str) -> str | None:
    if key not in record:
        return f'missing field \'{key}\' (each line needs "prompt" and "completion")'
    if not isinstance(record[key], str):
        return f"field '{key}' must be a string, got {json_type(record[key])}"
    if not record[key].strip():
        return f"field '{key}' is empty"
    if has_broken_character(record[key]):
        return f"field '{key}' holds a broken character (an unpaired \\ud800-\\udfff escape)"
    return None


def has_broken_character(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (U+D800..U+DFFF): bytes that were not UTF-8
    (a command-line argument or a terminal line, decoded with ``surrogateescape``) or an
    unpaired ``\\ud800`` JSON escape. Such text cannot be written as UTF-8, so no tokenizer takes it."""
    return _LONE_SURROGATE.search(text) is not None


BROKEN_TEXT_HINT = "it holds bytes that are not UTF-8 text (a broken character); type it again"


@attrs.frozen
class Encoded:
    ids: list[int]  # <bos> prompt part, answer part, <eos>
    answer_start: int  # index in ids of the first answer token


def encode_sample(tokenizer: Tokenizer, sample: Sample, encode: Callable[[str], list[int]] | None = None) -> Encoded:
    """``<bos>``, the templated prompt, the answer, ``<eos>``; ``encode``: the tokenizer's (default) or
    one that remembers texts it has seen (:func:`tokenize_split`)."""
    encode = encode or tokenizer.encode
    prompt_ids = [tokenizer.bos_id, *encode(format_prompt(sample.prompt))]
    answer_ids = [*encode(sample.completion), tokenizer.eos_id]
    return Encoded(prompt_ids + answer_ids, len(prompt_ids))


def sample_length(encode: Callable[[str], list[int]], sample: Sample) -> int:
    """Tokens in the sequence :func:`encode_sample` builds: <bos>, prompt part, answer, <eos>."""
    return 1 + len(encode(format_prompt(sample.prompt))) + len(encode(sample.completion)) + 1


def training_texts(samples: Sequence[Sample]) -> Iterator[str]:
    """What a tokenizer is trained on: the samples as the model will see them."""
    for s in samples:
        yield format_prompt(s.prompt) + s.completion


class PackedRows(Sequence[torch.Tensor]):
    """Rows of token ids of different lengths, stored end to end in one tensor.

    ``rows[i]`` is a view of row i (no copy). Tens of thousands of small tensors cost far more than
    their numbers: each carries ~1 KB of bookkeeping, so the teacher's 20,000 training samples as
    40,000 tensors took 62 MB; packed, the same ids take 16 MB.
    """

    def __init__(self, rows: Iterable[Sequence[int]]) -> None:
        rows = list(rows)
        self.lengths = [len(r) for r in rows]
        self.starts = [0]
        for n in self.lengths:
            self.starts.append(self.starts[-1] + n)
        self.ids = torch.tensor([t for r in rows for t in r], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.lengths)

    @overload
    def __getitem__(self, index: int) -> torch.Tensor: ...
    @overload
    def __getitem__(self, index: slice) -> list[torch.Tensor]: ...
    def __getitem__(self, index: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        index %= len(self)
        return self.ids[self.starts[index] : self.starts[index + 1]]


@attrs.define
class TokenizedSplit:
    """A data split as tensors: inputs are ids[:-1], targets ids[1:] masked to the answer."""

    inputs: Sequence[torch.Tensor]  # PackedRows from tokenize_split; any list of 1-D tensors works
    targets: Sequence[torch.Tensor]
    truncated: int  # samples cut to seq_len
    dropped: int  # samples whose prompt alone filled seq_len (nothing left to learn)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def lengths(self) -> list[int]:
        if isinstance(self.inputs, PackedRows):
            return list(self.inputs.lengths)
        return [len(x) for x in self.inputs]

    @property
    def answer_tokens(self) -> int:
        if isinstance(self.targets, PackedRows):  # one operation on all rows at once
            return int((self.targets.ids != IGNORE).sum())
        return sum(int((t != IGNORE).sum()) for t in self.targets)


def tokenize_split(
    samples: Sequence[Sample], tokenizer: Tokenizer, seq_len: int, *, truncate: bool, source: str
) -> TokenizedSplit:
    """Encode every sample once, up front, so the training loop does no Python text work."""
    inputs, targets = [], []
    too_long: list[str] = []
    dropped = 0
    # a text seen before is not encoded again: answers repeat (the teacher's 20,000 samples have 382)
    encode = functools.cache(tokenizer.encode)
    for sample in samples:
        enc = encode_sample(tokenizer, sample, encode)
        ids = enc.ids
        if len(ids) > seq_len:
            too_long.append(f"{sample.source} ({len(ids)} tokens)")
            ids = ids[:seq_len]
        if enc.answer_start >= len(ids):
            dropped += 1
            continue
        inputs.append(ids[:-1])
        targets.append([IGNORE] * (enc.answer_start - 1) + ids[enc.answer_start :])  # no loss on the prompt
    if too_long and not truncate:
        listed = "\n".join(f"  {s}" for s in too_long[:MAX_ERRORS_SHOWN])
        raise DataError(
            f"{source}: {len(too_long)} sample(s) longer than model.seq_len={seq_len} tokens:\n{listed}",
            hint="set data.truncate: true to cut them, or raise model.seq_len",
        )
    if not inputs:
        raise DataError(f"{source}: no usable samples (every prompt fills model.seq_len={seq_len})")
    return TokenizedSplit(PackedRows(inputs), PackedRows(targets), len(too_long), dropped)


def pad_batch(
    inputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    pad_id: int,
    multiple: int = 1,
    max_width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row of *this* batch (not to seq_len).

    Right padding needs no attention mask: with the causal mask, real tokens only look
    left, so they never see the padding; and padded targets are IGNORE, so no loss.
    ``multiple`` rounds the width up (never past ``max_width``): fewer distinct shapes, for
    kernels that are built and cached per shape (bf16 on CPU, see Trainer.pad_multiple).
    """
    width = max(len(x) for x in inputs)
    rounded = -(-width // multiple) * multiple
    width = max(width, min(rounded, max_width)) if max_width is not None else rounded
    x = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    y = torch.full((len(inputs), width), IGNORE, dtype=torch.long)
    for row, (xi, yi) in enumerate(zip(inputs, targets, strict=True)):
        x[row, : len(xi)] = xi
        y[row, : len(yi)] = yi
    return x, y


def _seed64(value: int) -> int:
    """A derived seed folded into the 64 bits torch's generator takes (unchanged below 2**64)."""
    return value % 2**64


def sample_stream(n: int, seed: int, start: int, count: int) -> list[int]:
    """Sample indices ``start .. start+count`` of an endless stream of epochs, each a fresh
    seeded permutation. Step s of batch size b reads ``sample_stream(n, seed, s*b, b)``,
    so the data order depends only on the seed: resuming at any step is exact."""
    out: list[int] = []
    position = start
    while len(out) < count:
        epoch, offset = divmod(position, n)
        generator = torch.Generator().manual_seed(_seed64(seed * 1_000_003 + epoch))
        order = torch.randperm(n, generator=generator).tolist()
        take = order[offset : offset + count - len(out)]
        out.extend(take)
        position += len(take)
    return out


def step_samples(lengths: Sequence[int], seed: int, step: int, batch_size: int, bucket_batches: int = 1) -> list[int]:
    """The sample indices of optimizer step ``step`` (a function of the seed and the step only).

    ``bucket_batches == 1``: the next ``batch_size`` samples of :func:`sample_stream`.
    ``bucket_batches == W > 1`` (length bucketing): the samples of W consecutive batches are
    sorted by length and cut into W batches of similar length, which are then taken in a
    seeded random order. Each epoch still sees every sample once, but a batch now holds
    samples of similar length, so padding to its longest row wastes little. Which samples
    share a batch changes, so training differs (not only by rounding) from W = 1.
    """
    if bucket_batches <= 1:
        return sample_stream(len(lengths), seed, step * batch_size, batch_size)
    window, slot = divmod(step, bucket_batches)
    pool = sample_stream(len(lengths), seed, window * bucket_batches * batch_size, bucket_batches * batch_size)
    pool.sort(key=lambda i: lengths[i])  # stable: equal lengths keep the stream's order
    shuffle = torch.Generator().manual_seed(_seed64(seed * 7_919 + window))
    order = torch.randperm(bucket_batches, generator=shuffle).tolist()
    first = order[slot] * batch_size
    return pool[first : first + batch_size]


def micro_batches(
    split: TokenizedSplit,
    indices: Sequence[int],
    micro_batch: int,
    pad_id: int,
    multiple: int = 1,
    max_width: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split one optimizer batch into padded micro-batches of similar length.

    Sorting the batch by length before cutting it means short rows are padded only to
    other short rows. The gradient is unchanged: the same samples, summed.
    """
    ordered = sorted(indices, key=lambda i: len(split.inputs[i]))
    chunks = [ordered[i : i + micro_batch] for i in range(0, len(ordered), micro_batch)]
    return [
        pad_batch([split.inputs[i] for i in c], [split.targets[i] for i in c], pad_id, multiple, max_width)
        for c in chunks
    ]


# ------------------------------------------------------------------ prompt augmentation
# Prompt augmentation: the same question, dressed in different polite words.
#
# A small model trained on ~3 wordings per question learns those exact strings. Showing it
# extra copies of each training question with a random polite prefix ("请问", "能说说") or a
# different ending ("吗？", "呢？", no punctuation) teaches it that such filler words do not
# change the question, so it listens to the words that matter. The answers never change.
# Measured on the held-out val rephrasings (teacher recipe, 600 steps): greedy exact match
# rose from 5% to 9% and char-F1 from 0.23 to 0.27 (see the README's quality section).

PREFIXES = ("", "请问", "请问一下", "能说说", "能不能讲讲", "简单介绍一下", "我想知道", "你知道", "请解释", "告诉我")
SUFFIXES = ("", "？", "?", "吗？", "呢？", "。")
_FINAL_PUNCTUATION = re.compile(r"[？?。！!]+$")


def augment_prompts(samples: Sequence[Sample], copies: int, seed: int) -> list[Sample]:
    """Return the samples plus up to ``copies`` filler-word variants of each (seeded)."""
    rng = random.Random(seed)
    out = list(samples)
    for sample in samples:
        core = _FINAL_PUNCTUATION.sub("", sample.prompt)
        seen = {sample.prompt}
        for _ in range(copies):
            prompt = rng.choice(PREFIXES) + core + rng.choice(SUFFIXES)
            if prompt not in seen:
                seen.add(prompt)
                out.append(Sample(prompt, sample.completion, f"{sample.source} (augmented)", sample.concept))
    return out
