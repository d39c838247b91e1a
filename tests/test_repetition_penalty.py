"""repetition_penalty: breaks loops, but never touches digits, punctuation or whitespace (facts stay facts)."""

from __future__ import annotations

import attrs
import pytest
import torch

from gptf.generate import Generator, SamplingSettings
from gptf.interfaces import DecodingState
from gptf.plugins.decoding.repetition_penalty import RepetitionPenalty, is_digits_or_punctuation
from gptf.plugins.tokenization.char_level import CharTokenizer

TAUGHT = "我是一个约337万参数的GPT，2006年。"


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    tok = CharTokenizer(400)
    tok.train([TAUGHT, "用户:你是谁\n助手:", "冥王星"])
    return tok


def test_what_counts_as_digits_or_punctuation() -> None:
    for piece in ("3", "00", "，", "。", " ", "\n", "2006", "１", "3.5"):
        assert is_digits_or_punctuation(piece.encode()), piece
    for piece in ("万", "G", "3万", "a1", ""):
        assert not is_digits_or_punctuation(piece.encode()), piece
    assert not is_digits_or_punctuation("万".encode()[:2])  # part of a character belongs to a word


def test_digits_and_punctuation_are_never_penalised(tokenizer: CharTokenizer) -> None:
    state = DecodingState(tokenizer, [], tokenizer.encode("约337万参数，"))
    logits = torch.full((tokenizer.vocab_size,), 2.0)
    adjusted = RepetitionPenalty(tokenizer, penalty=2.0).adjust_logits(logits.clone(), state)
    for ch in "3，":
        assert adjusted[tokenizer.encode(ch)[0]] == 2.0, ch
    for ch in "约万参数":
        assert adjusted[tokenizer.encode(ch)[0]] == 1.0, ch  # 2.0 / 2.0
    assert adjusted[tokenizer.encode("G")[0]] == 2.0  # not in the answer yet
    old = RepetitionPenalty(tokenizer, penalty=2.0, skip_digits_and_punctuation=False)
    assert old.adjust_logits(logits.clone(), state)[tokenizer.encode("3")[0]] == 1.0


@attrs.frozen
class _Config:
    seq_len: int = 64


class ScriptedModel(torch.nn.Module):
    """A fake GPT that means to write ``script`` after the prompt, but only just: each next
    character scores 2.0 and a wrong one ("8") 1.9, so a penalty of 1.1 on a repeat tips it."""

    def __init__(self, tokenizer: CharTokenizer, prompt_len: int, script: str) -> None:
        super().__init__()
        self.config = _Config()
        self.tokenizer, self.prompt_len = tokenizer, prompt_len
        self.script = [*tokenizer.encode(script), tokenizer.eos_id]

    def forward(self, ids: torch.Tensor, cache: object = None) -> torch.Tensor:
        step = ids.shape[1] - self.prompt_len
        scores = torch.zeros(self.tokenizer.vocab_size)
        scores[self.tokenizer.encode("8")[0]] = 1.9
        scores[self.script[min(step, len(self.script) - 1)]] = 2.0
        return scores.expand(ids.shape[0], ids.shape[1], -1)


@pytest.mark.parametrize("skip", [False, True])
def test_a_number_with_repeated_digits_comes_out_whole(tokenizer: CharTokenizer, skip: bool) -> None:
    prompt = "你是谁"
    probe = Generator(ScriptedModel(tokenizer, 0, TAUGHT), tokenizer, use_cache=False)
    prompt_len = len(probe.prompt_ids(prompt))
    model = ScriptedModel(tokenizer, prompt_len, TAUGHT)
    penalty = RepetitionPenalty(tokenizer, penalty=1.1, skip_digits_and_punctuation=skip)
    answer = Generator(model, tokenizer, [penalty], use_cache=False).generate(prompt, SamplingSettings(64)).text
    if skip:
        assert answer == TAUGHT  # 337万 and 2006年 intact
    else:
        assert answer.startswith("我是一个约38")  # the old penalty turned the second 3 into an 8
        assert "337" not in answer


def test_ngram_mode_penalises_only_a_repeated_ngram(tokenizer: CharTokenizer) -> None:
    ids = tokenizer.encode("参数的参")
    penalty = RepetitionPenalty(tokenizer, penalty=2.0, ngram=2)
    assert penalty.repeats(ids) == {tokenizer.encode("数")[0]}  # 参 was followed by 数 before
    logits = torch.full((tokenizer.vocab_size,), 2.0)
    adjusted = penalty.adjust_logits(logits.clone(), DecodingState(tokenizer, [], ids))
    assert adjusted[tokenizer.encode("数")[0]] == 1.0 and adjusted[tokenizer.encode("的")[0]] == 2.0
    with pytest.raises(ValueError, match="ngram"):
        RepetitionPenalty(tokenizer, ngram=0)


@pytest.mark.parametrize("penalty", [1.1, 1.3, 0.7])
def test_the_penalty_is_the_textbook_formula_bit_for_bit(tokenizer: CharTokenizer, penalty: float) -> None:
    """A repeated token's score s becomes s / p if positive and s * p if not, exactly as the
    formula in plain float32 arithmetic with the Python number p gives; the others stay as they were."""
    ids = tokenizer.encode("我是一个约万参数的")  # letters and characters only: every one is penalised
    logits = torch.randn(tokenizer.vocab_size, generator=torch.Generator().manual_seed(3)) * 10
    adjusted = RepetitionPenalty(tokenizer, penalty=penalty).adjust_logits(
        logits.clone(), DecodingState(tokenizer, [], ids)
    )
    expected = logits.clone()
    for token in set(ids):
        s = logits[token : token + 1]
        expected[token] = torch.where(s > 0, s / penalty, s * penalty)[0]
    assert torch.equal(adjusted, expected)
    assert sum(bool(a != b) for a, b in zip(adjusted, logits, strict=True)) == len(set(ids))
