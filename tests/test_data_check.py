"""Tests for gptf.tools.data_check and for the shipped teaching data in data/."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptf.data import Sample, encode_sample, format_prompt, parse_jsonl, read_jsonl
from gptf.tools.data_check import (
    NEAR_DUP_THRESHOLD,
    check_files,
    format_report,
    jaccard,
    normalize,
    trigrams,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SPLIT_FILES = [DATA / "train.jsonl", DATA / "val.jsonl", DATA / "test.jsonl"]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    """Write rows as JSONL; a str row is written verbatim (to make bad lines)."""
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def qa(prompt: str, completion: str = "这是回答。") -> dict[str, str]:
    return {"prompt": prompt, "completion": completion}


def similarity(a: str, b: str) -> float:
    return jaccard(trigrams(normalize(a)), trigrams(normalize(b)))


# ---------------------------------------------------------------- bad lines


def test_each_bad_line_gives_a_file_line_message(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            qa("好的问题"),  # 1 fine
            "{not json",  # 2
            "[1, 2]",  # 3 not an object
            {"completion": "只有回答。"},  # 4 missing prompt
            {"prompt": "只有问题"},  # 5 missing completion
            {"prompt": 42, "completion": "回答。"},  # 6 non-string
            {"prompt": "问题", "completion": ["列表"]},  # 7 non-string
            {"prompt": "", "completion": "回答。"},  # 8 empty
            {"prompt": "问题", "completion": " \u3000\t"},  # 9 whitespace only
            "",  # 10 blank line: skipped, as the trainer does
            qa("另一个问题"),  # 11 fine
        ],
    )
    report = check_files([path])
    assert not report.ok
    by_line = {int(e.split(":")[1]): e for e in report.errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert all(e.startswith(f"{path}:") for e in report.errors)
    assert "not valid JSON" in by_line[2]
    assert "JSON object" in by_line[3]
    assert "missing field 'prompt'" in by_line[4]
    assert "missing field 'completion'" in by_line[5]
    assert "'prompt' must be a string" in by_line[6]
    assert "'completion' must be a string" in by_line[7]
    assert "'prompt' is empty" in by_line[8]
    assert "'completion' is empty" in by_line[9]
    (stats,) = report.files
    assert (stats.lines, stats.valid) == (11, 2)


@pytest.mark.parametrize("content", ["", "\n", " \n\n\u3000\n"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    report = check_files([path])
    assert not report.ok
    assert report.errors == [f"{path}: empty file"]


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    report = check_files([tmp_path / "nope.jsonl"])
    assert not report.ok
    assert report.errors[0] == f"data file not found: {tmp_path / 'nope.jsonl'}"


def test_a_folder_is_not_called_missing(tmp_path: Path) -> None:
    report = check_files([tmp_path])
    assert report.errors == [f"{tmp_path} is a folder, not a JSONL file"]


def test_a_file_read_again_is_read_as_it_is_now(tmp_path: Path) -> None:
    """Each file is parsed once while its bytes stay the same: a change of the same size, written
    at once (the same modification time), is read; a caller changing its list changes nothing."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    first = read_jsonl(path)
    first.append(Sample("x", "y"))
    assert [(s.prompt, s.completion) for s in read_jsonl(path)] == [("a", "b")]
    path.write_text('{"prompt": "c", "completion": "d"}\n', encoding="utf-8")
    assert [(s.prompt, s.completion) for s in read_jsonl(path)] == [("c", "d")]
    path.write_text('{"prompt": "c", "completion": 5}\n', encoding="utf-8")
    assert parse_jsonl(path).errors == [f"{path}:1: field 'completion' must be a string, got a number (5)"]
    path.write_text("{}\r{}\r\n", encoding="utf-8")  # old Mac line ends too, as a text file reads them
    assert parse_jsonl(path).lines == 2


def test_extra_fields_are_allowed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "问题", "completion": "回答。", "concept": "x"}])
    assert check_files([path]).ok


# ---------------------------------------------------------------- statistics


def test_counts_duplicates_and_token_lengths(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [qa("问题一", "回答甲。"), qa("问题二", "回答甲。"), qa("问题一", "回答甲。"), qa("问题一", "回答乙。")],
    )
    # one token per character, so counts are easy to predict
    report = check_files([path], encode=list, seq_len=15)
    assert report.ok  # duplicates are reported, but are not errors
    (stats,) = report.files
    assert (stats.lines, stats.valid) == (4, 4)
    assert (stats.distinct_prompts, stats.distinct_completions) == (2, 2)
    assert stats.duplicates == [[1, 3]]
    # prompt part "用户:问题一\n助手:" is 10 characters, answer "回答甲。" 4, +2 for <bos>/<eos>
    assert stats.tokens is not None
    assert (stats.tokens.min, stats.tokens.max, stats.tokens.median) == (16, 16, 16)
    assert stats.over_seq_len == 4
    assert stats.chars is not None and stats.chars.max == 7
    text = format_report(report)
    assert "lines 1, 3" in text and "over seq_len 15: 4" in text and text.endswith("OK")


def test_prompt_spaces_are_not_counted(tmp_path: Path) -> None:
    # the trainer drops the spaces of a prompt (gptf.data.format_prompt), so the checker does too
    path = write_jsonl(tmp_path / "a.jsonl", [qa("问 题\u3000一", "回答甲。")])
    (stats,) = check_files([path], encode=list).files
    assert stats.tokens is not None and stats.tokens.max == 16


def test_no_token_stats_without_encoder(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [qa("问题")])
    (stats,) = check_files([path]).files
    assert stats.tokens is None and stats.over_seq_len == 0


# ---------------------------------------------------------------- leakage


def test_same_prompt_after_normalisation_leaks(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [qa("随便问问"), qa("什么是RoPE？")])
    val = write_jsonl(tmp_path / "val.jsonl", [qa("什么是 rope?"), qa("完全不同的问题")])
    test = write_jsonl(tmp_path / "test.jsonl", [qa("「什么是ＲｏＰＥ」\u3000！")])
    report = check_files([train, val, test])
    assert not report.ok and not report.errors
    found = {(leak.file_a, leak.line_a, leak.file_b, leak.line_b, leak.reason) for leak in report.leaks}
    assert found == {
        (str(train), 2, str(val), 1, "same prompt"),
        (str(train), 2, str(test), 1, "same prompt"),
        (str(val), 1, str(test), 1, "same prompt"),
    }
    assert str(report.leaks[0]).startswith(f"{train}:2 ~ {val}:1 (same prompt, 1.00)")
    assert "FAILED" in format_report(report)


def test_near_duplicate_prompts_leak(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [qa("什么是旋转位置编码")])
    val = write_jsonl(tmp_path / "val.jsonl", [qa("请问什么是旋转位置编码？"), qa("什么是旋转位置编码呢")])
    report = check_files([train, val])
    assert [leak.reason for leak in report.leaks] == ["near duplicate", "near duplicate"]
    assert all(NEAR_DUP_THRESHOLD <= leak.score < 1.0 for leak in report.leaks)
    assert [leak.line_b for leak in report.leaks] == [1, 2]


@pytest.mark.parametrize(
    ("seen", "reworded"),
    [
        ("什么是RoPE？", "RoPE是什么"),
        ("旋转位置编码是什么", "RoPE在模型里起什么作用"),
        ("什么是top-k采样？", "什么是top-p采样？"),
        ("什么是学习率预热？", "学习率为什么先慢慢升上去"),
        ("为什么要打乱训练数据？", "每轮开始前为什么要洗牌"),
        ("梯度裁剪有什么用", "为什么要限制梯度的范数"),
    ],
)
def test_reworded_questions_are_not_flagged(tmp_path: Path, seen: str, reworded: str) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [qa(seen)])
    val = write_jsonl(tmp_path / "val.jsonl", [qa(reworded)])
    report = check_files([train, val])
    assert report.ok, format_report(report)
    assert similarity(seen, reworded) < NEAR_DUP_THRESHOLD


def test_repeats_inside_one_file_are_not_leakage(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [qa("什么是RoPE？"), qa("什么是rope"), qa("什么是RoPE？")])
    report = check_files([path])
    assert report.ok and not report.leaks
    assert report.files[0].duplicates == [[1, 3]]


def test_same_file_given_twice_is_not_leakage(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [qa("什么是RoPE？")])
    assert check_files([path, path]).ok


noise = st.sampled_from([" ", "\u3000", "？", "?", "，", "。", "!", "、", "“", "”", "-", "…"])


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.text(alphabet="注意力机制学习率ropeRoPEtopk是什么", min_size=1, max_size=12),
    inserts=st.lists(st.tuples(st.integers(0, 12), noise), max_size=4),
    upper=st.booleans(),
)
def test_punctuation_space_and_case_never_hide_a_leak(
    tmp_path_factory: pytest.TempPathFactory, prompt: str, inserts: list[tuple[int, str]], upper: bool
) -> None:
    variant = prompt.upper() if upper else prompt
    for position, char in inserts:
        variant = variant[:position] + char + variant[position:]
    folder = tmp_path_factory.mktemp("prop")
    train = write_jsonl(folder / "train.jsonl", [qa(prompt)])
    val = write_jsonl(folder / "val.jsonl", [qa(variant)])
    report = check_files([train, val])
    assert [leak.reason for leak in report.leaks] == ["same prompt"]


def test_similarity_helpers() -> None:
    assert normalize(" 什么是 ＲｏＰＥ？! ") == "什么是rope"
    assert normalize("什麼是RoPE") == "什么是rope"  # traditional characters: as the model reads them
    assert trigrams("ab") == frozenset({"ab"}) and trigrams("") == frozenset()
    assert jaccard(frozenset(), frozenset()) == 0.0
    assert similarity("什么是RoPE", "RoPE是什么") == pytest.approx(0.25)


# ---------------------------------------------------------------- the shipped data


def train_bpe(texts: list[str], vocab_size: int = 824):  # returns a tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<bos>", "<eos>", "<pad>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def read_rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_shipped_data_passes_the_checker() -> None:
    train, val, test = (read_rows(path) for path in SPLIT_FILES)
    # trained on the texts the trainer feeds a tokenizer: "用户:{prompt}\n助手:" + completion
    tok = train_bpe([format_prompt(r["prompt"]) + r["completion"] for r in train])
    assert tok.get_vocab_size() == 824

    report = check_files(SPLIT_FILES, encode=lambda text: tok.encode(text).ids, seq_len=128)
    assert report.ok, format_report(report)
    assert not report.leaks
    for stats in report.files:
        assert stats.valid == stats.lines and not stats.duplicates
        assert stats.tokens is not None and stats.tokens.max <= 128, stats.path
        assert stats.over_seq_len == 0

    train_stats, val_stats, test_stats = report.files
    assert train_stats.distinct_prompts >= 800
    assert len({r["concept"] for r in train}) >= 250
    assert val_stats.distinct_prompts >= 80
    assert test_stats.distinct_prompts >= 80

    # the checker's token count is the length of the sequence the trainer builds
    specials = SimpleNamespace(bos_id=0, eos_id=1, encode=lambda text: tok.encode(text).ids)
    for rows, stats in zip((train, val, test), report.files, strict=True):
        lengths = [len(encode_sample(specials, Sample(r["prompt"], r["completion"])).ids) for r in rows]
        assert stats.tokens is not None
        assert (stats.tokens.min, stats.tokens.max) == (min(lengths), max(lengths))
        assert stats.tokens.mean == pytest.approx(sum(lengths) / len(lengths))

    train_prompts = {normalize(r["prompt"]) for r in train}
    train_concepts = {r["concept"] for r in train}
    for rows in (val, test):
        assert not {normalize(r["prompt"]) for r in rows} & train_prompts
        assert {r["concept"] for r in rows} <= train_concepts  # held-out wording, known concept
