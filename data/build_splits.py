"""Build train/val/test JSONL files from the concept sources in data/concepts/*.yaml.

Run from the repository root:

    python data/build_splits.py

Each concept has one canonical answer, 2-4 "train" phrasings and 1-2 "heldout"
phrasings. Train phrasings go to data/train.jsonl. Held-out phrasings go to
data/val.jsonl or data/test.jsonl, so val and test ask about concepts the model
has seen, but always in a wording it has never seen.

The split is deterministic and stable under edits: a concept's first held-out
phrasing goes to the split picked by a hash of the concept id, its second (if
any) to the other split. Adding or removing a concept never moves another one.

Only the standard library and PyYAML are used.
"""

from __future__ import annotations

import hashlib
import json
import string
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml

DATA_DIR = Path(__file__).resolve().parent
CONCEPT_DIR = DATA_DIR / "concepts"
SPLITS = ("val", "test")
TOPICS = frozenset(
    {
        "model",
        "tokenization",
        "training",
        "inference",
        "pipeline",
        "identity",
        "science",
        "geography",
        "everyday",
        "computing",
        "arithmetic",
        "language",
    }
)
TRAIN_RANGE = (2, 4)  # allowed number of train phrasings per concept
HELDOUT_RANGE = (1, 2)  # allowed number of held-out phrasings per concept


@dataclass(frozen=True)
class Concept:
    """One concept: a canonical answer and the phrasings that ask for it."""

    source: str
    id: str
    topic: str
    answer: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]


def normalize(text: str) -> str:
    """Same normalisation as gptf.tools.data_check: NFKC, no spaces, no punctuation, lowercase."""
    text = unicodedata.normalize("NFKC", text)
    kept = [
        ch
        for ch in text
        if not ch.isspace() and ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    ]
    return "".join(kept).casefold()


def _string_list(value: object, where: str, key: str, bounds: tuple[int, int]) -> tuple[str, ...]:
    """Check that `value` is a list of non-empty strings with a length inside `bounds`."""
    low, high = bounds
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise ValueError(f"{where}: '{key}' must be a list of {low}-{high} strings")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{where}: '{key}' holds an empty or non-string item: {item!r}")
    return tuple(value)


def load_concepts(path: Path) -> list[Concept]:
    """Read and validate one YAML source file."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path.name}: expected a non-empty YAML list of concepts")
    concepts = []
    for index, item in enumerate(raw):
        where = f"{path.name}[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: each concept must be a mapping")
        expected = {"id", "topic", "answer", "train", "heldout"}
        if set(item) != expected:
            raise ValueError(f"{where}: keys must be exactly {sorted(expected)}, got {sorted(item)}")
        for key in ("id", "topic", "answer"):
            if not isinstance(item[key], str) or not item[key].strip():
                raise ValueError(f"{where}: '{key}' must be a non-empty string")
        where = f"{path.name}:{item['id']}"
        if item["topic"] not in TOPICS:
            raise ValueError(f"{where}: unknown topic {item['topic']!r}")
        concepts.append(
            Concept(
                source=path.name,
                id=item["id"],
                topic=item["topic"],
                answer=item["answer"],
                train=_string_list(item["train"], where, "train", TRAIN_RANGE),
                heldout=_string_list(item["heldout"], where, "heldout", HELDOUT_RANGE),
            )
        )
    return concepts


def check_unique(concepts: list[Concept]) -> None:
    """Ids must be unique, and no prompt may appear twice anywhere (after normalisation)."""
    seen_ids: dict[str, str] = {}
    seen_prompts: dict[str, str] = {}
    for concept in concepts:
        if concept.id in seen_ids:
            raise ValueError(f"duplicate id {concept.id!r} in {concept.source} and {seen_ids[concept.id]}")
        seen_ids[concept.id] = concept.source
        for prompt in concept.train + concept.heldout:
            key = normalize(prompt)
            if key in seen_prompts:
                raise ValueError(
                    f"prompt {prompt!r} of {concept.source}:{concept.id} repeats a prompt of {seen_prompts[key]}"
                )
            seen_prompts[key] = f"{concept.source}:{concept.id}"


def first_split(concept_id: str) -> str:
    """The split that receives a concept's first held-out phrasing (stable hash of the id)."""
    digest = hashlib.sha256(concept_id.encode("utf-8")).digest()
    return SPLITS[digest[0] % 2]


def build(concepts: list[Concept]) -> dict[str, list[dict[str, str]]]:
    """Turn concepts into rows for train, val and test, in file-then-concept order."""
    rows: dict[str, list[dict[str, str]]] = {"train": [], "val": [], "test": []}
    for concept in concepts:
        for prompt in concept.train:
            rows["train"].append({"prompt": prompt, "completion": concept.answer, "concept": concept.id})
        first = first_split(concept.id)
        other = SPLITS[1 - SPLITS.index(first)]
        for prompt, split in zip(concept.heldout, (first, other), strict=False):
            rows[split].append({"prompt": prompt, "completion": concept.answer, "concept": concept.id})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    """Write one JSON object per line, UTF-8, Chinese kept readable."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> int:
    sources = sorted(CONCEPT_DIR.glob("*.yaml"))
    if not sources:
        print(f"no concept files in {CONCEPT_DIR}", file=sys.stderr)
        return 1
    concepts: list[Concept] = []
    try:
        for source in sources:
            concepts.extend(load_concepts(source))
        check_unique(concepts)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = build(concepts)
    for split, split_rows in rows.items():
        write_jsonl(DATA_DIR / f"{split}.jsonl", split_rows)
    names = ", ".join(source.name for source in sources)
    print(f"read {len(concepts)} concepts from {names}")
    for split, split_rows in rows.items():
        n_concepts = len({row["concept"] for row in split_rows})
        print(f"  {split}.jsonl: {len(split_rows)} samples over {n_concepts} concepts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
