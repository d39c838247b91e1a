"""A tokenized split keeps its rows end to end in one tensor (gptf.data.PackedRows)."""

from __future__ import annotations

import pytest
import torch

from gptf.data import IGNORE, PackedRows, Sample, TokenizedSplit, encode_sample, tokenize_split
from gptf.plugins.tokenization.char_level import CharTokenizer


def test_rows_come_back_as_they_went_in() -> None:
    rows = [[5, 6, 7], [], [8], [9, 10]]
    packed = PackedRows(rows)
    assert len(packed) == 4
    assert [r.tolist() for r in packed] == rows
    assert packed[-1].tolist() == [9, 10]
    assert [r.tolist() for r in packed[1:3]] == [[], [8]]
    assert packed[0].dtype == torch.long
    assert packed.lengths == [3, 0, 1, 2]
    for outside in (4, -5):
        with pytest.raises(IndexError):
            packed[outside]


def test_tokenize_split_masks_the_prompt_in_the_targets() -> None:
    samples = [Sample("你好吗", "我很好"), Sample("天空", "是蓝的因为散射")]
    tok = CharTokenizer(300)
    tok.train(s.prompt + s.completion for s in samples)
    split = tokenize_split(samples, tok, 64, truncate=True, source="t")
    assert isinstance(split.inputs, PackedRows)
    assert split.lengths == [len(x) for x in split.inputs]
    for sample, x, y in zip(samples, split.inputs, split.targets, strict=True):
        enc = encode_sample(tok, sample)
        assert x.tolist() == enc.ids[:-1]  # the model reads every token but the last
        expected = torch.tensor(enc.ids[1:])
        expected[: enc.answer_start - 1] = IGNORE  # and is scored on the answer and <eos> only
        assert torch.equal(y, expected)
    assert split.answer_tokens == sum(len(tok.encode(s.completion)) + 1 for s in samples)


def test_a_split_of_plain_tensor_lists_still_works() -> None:
    rows = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]
    split = TokenizedSplit(rows, [torch.tensor([IGNORE, 2, 3]), torch.tensor([IGNORE, 5])], 0, 0)
    assert split.lengths == [3, 2] and split.answer_tokens == 3 and len(split) == 2
