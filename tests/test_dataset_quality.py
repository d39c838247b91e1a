"""The shipped teaching data teaches mappings, not sentences: generated forms, aliases, out-of-scope.

See data/README.md. These tests read data/*.jsonl and the generator in data/; they do not train.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


def load_module(name: str):
    if str(DATA) not in sys.path:
        sys.path.insert(0, str(DATA))
    spec = importlib.util.spec_from_file_location(name, DATA / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


forms = load_module("question_forms")
build_splits = load_module("build_splits")


def rows(split: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def is_out_of_scope(row: dict[str, str]) -> bool:
    return row["concept"].startswith(build_splits.OUT_OF_SCOPE_PREFIX)


def test_shipped_files_are_what_build_splits_writes(tmp_path: Path) -> None:
    """data/*.jsonl must be regenerated after editing the sources (python data/build_splits.py)."""
    assert build_splits.main(["--out", str(tmp_path)]) == 0
    for split in ("train", "val", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (DATA / f"{split}.jsonl").read_bytes(), (
            f"data/{split}.jsonl is stale: run python data/build_splits.py"
        )


def test_every_concept_is_asked_many_ways() -> None:
    per_concept = Counter(r["concept"] for r in rows("train") if not is_out_of_scope(r))
    assert len(per_concept) >= 381
    assert min(per_concept.values()) >= 15, per_concept.most_common()[-5:]


def test_one_question_one_answer() -> None:
    """No question (as the model sees it) is taught with two different answers."""
    answers: dict[str, set[str]] = defaultdict(set)
    for r in rows("train"):
        answers[build_splits.question_key(r["prompt"])].add(r["completion"])
    assert not {q: a for q, a in answers.items() if len(a) > 1}


def test_out_of_scope_rows_use_the_one_fixed_answer() -> None:
    answer = forms.OUT_OF_SCOPE_ANSWER
    assert answer == "这个问题我还没有学过。"
    for split in ("train", "val", "test"):
        split_rows = rows(split)
        assert all((r["completion"] == answer) == is_out_of_scope(r) for r in split_rows), split
        assert sum(is_out_of_scope(r) for r in split_rows) >= (300 if split == "train" else 20), split
    share = sum(map(is_out_of_scope, rows("train"))) / len(rows("train"))
    assert 0.02 <= share <= 0.12, share  # enough to learn declining, not so much that it declines everything


def test_arithmetic_is_asked_with_digits_and_chinese_numerals() -> None:
    prompts = defaultdict(list)
    for r in rows("train"):
        prompts[r["concept"]].append(r["prompt"])
    for concept in ("mul_5_9", "div_72_9", "add_25_17", "sub_100_37"):
        asked = prompts[concept]
        assert any(ch.isdigit() for p in asked for ch in p)
        assert any(("五" in p or "七十二" in p or "二十五" in p or "一百" in p) for p in asked)
        assert len(asked) >= 20


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "零"),
        (5, "五"),
        (10, "十"),
        (12, "十二"),
        (25, "二十五"),
        (100, "一百"),
        (108, "一百零八"),
        (120, "一百二十"),
    ],
)
def test_chinese_numbers(n: int, text: str) -> None:
    assert forms.chinese_number(n) == text


def test_parse_calc() -> None:
    assert forms.parse_calc("5×9") == (5, "×", 9, 45)
    assert forms.parse_calc("72÷9") == (72, "÷", 9, 8)
    with pytest.raises(ValueError):
        forms.parse_calc("7÷2")


def test_generator_fits_the_question_kind() -> None:
    why = forms.candidate_groups({"why": {"subject": ["高压锅"], "predicate": ["煮东西快"]}}, "everyday")
    questions = [q for group in why.values() for q in group]
    assert "高压锅为什么煮东西快" in questions and "为什么高压锅煮东西快" in questions
    diff = forms.candidate_groups({"diff": {"a": ["RMSNorm"], "b": ["LayerNorm"]}}, "model")
    questions = [q for group in diff.values() for q in group]
    assert "RMSNorm和LayerNorm有什么区别" in questions and "LayerNorm和RMSNorm有什么区别" in questions
    term = forms.candidate_groups({"names": ["RoPE", "旋转位置编码"]}, "model")
    assert set(term) == {"term/RoPE", "term/旋转位置编码"}
    assert "what is RoPE" in term["term/RoPE"] and "what is 旋转位置编码" not in term["term/旋转位置编码"]


def test_pick_covers_every_group_first_and_is_deterministic() -> None:
    groups = {f"g{i}": [f"q{i}-{j}" for j in range(10)] for i in range(5)}
    picked = forms.pick(groups, 5, "seed")
    assert sorted(q.split("-")[0] for q in picked) == ["q0", "q1", "q2", "q3", "q4"]
    assert forms.pick(groups, 12, "seed") == forms.pick(groups, 12, "seed")


def test_generated_questions_never_copy_a_held_out_prompt() -> None:
    heldout = build_splits.HeldoutIndex([r["prompt"] for split in ("val", "test") for r in rows(split)])
    leaks = [r["prompt"] for r in rows("train") if heldout.leaks(r["prompt"])]
    assert not leaks, leaks[:10]
