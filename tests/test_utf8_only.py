"""The utf8_only decoding constraint: a model that *wants* to print half characters cannot."""

from __future__ import annotations

import itertools
import json

import attrs
import pytest
import torch
from conftest import FIXTURES

from gptf.generate import Generator, SamplingSettings
from gptf.interfaces import DecodingState
from gptf.plugins.decoding.utf8_only import INVALID, Utf8Only, bytes_still_needed, unfinished_tail
from gptf.plugins.tokenization.byte_bpe import ByteLevelBPE

CONTINUATIONS = (0x80, 0x90, 0xA0, 0xBF)  # one byte from each range UTF-8 treats differently


@pytest.fixture(scope="module")
def tokenizer() -> ByteLevelBPE:
    lines = (FIXTURES / "tiny_train.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["prompt"] + json.loads(line)["completion"] for line in lines]
    tok = ByteLevelBPE(400)
    tok.train(texts * 3)
    return tok


@attrs.frozen
class _Config:
    seq_len: int = 256
    n_layer: int = 1
    n_kv_head: int = 1
    head_dim: int = 4


class BrokenBytesModel(torch.nn.Module):
    """A fake GPT whose favourite tokens are the ones that break UTF-8.

    Scores: continuation bytes (80-bf) and bytes UTF-8 never uses (c0, c1, f5-ff) highest, then
    lead bytes of 3- and 4-byte characters, then random noise; a new random order every step."""

    def __init__(self, tokenizer: ByteLevelBPE, seed: int) -> None:
        super().__init__()
        self.config = _Config()
        self.generator = torch.Generator().manual_seed(seed)
        bonus = []
        for i in range(tokenizer.vocab_size):
            piece = tokenizer.token_bytes(i)
            first = piece[0] if piece else 0
            if 0x80 <= first <= 0xBF or first in (0xC0, 0xC1) or first >= 0xF5:
                bonus.append(20.0)
            elif first >= 0xE0 or (piece and piece[-1] >= 0xE0):  # opens a character it may not finish
                bonus.append(10.0)
            else:
                bonus.append(0.0)
        self.bonus = torch.tensor(bonus)

    def forward(self, ids: torch.Tensor, cache: object = None) -> torch.Tensor:
        noise = torch.rand(self.bonus.shape, generator=self.generator) * 15
        return (self.bonus + noise).expand(ids.shape[0], ids.shape[1], -1)


def answer_bytes(tokenizer: ByteLevelBPE, ids: list[int]) -> bytes:
    return b"".join(tokenizer.token_bytes(i) for i in ids)


def test_the_fake_model_really_breaks_utf8_without_the_constraint(tokenizer: ByteLevelBPE) -> None:
    generator = Generator(BrokenBytesModel(tokenizer, seed=0), tokenizer, use_cache=False)
    answer = generator.generate("你好", SamplingSettings(max_new_tokens=24))
    assert "\ufffd" in answer.raw_text
    with pytest.raises(UnicodeDecodeError):
        answer_bytes(tokenizer, [t.token_id for t in answer.tokens]).decode("utf-8")


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_constraint_keeps_every_answer_valid_utf8(tokenizer: ByteLevelBPE, seed: int, temperature: float) -> None:
    generator = Generator(BrokenBytesModel(tokenizer, seed), tokenizer, [Utf8Only(tokenizer)], use_cache=False)
    answer = generator.generate("你好", SamplingSettings(max_new_tokens=40, temperature=temperature), seed=seed)
    raw = answer_bytes(tokenizer, [t.token_id for t in answer.tokens])
    assert raw.decode("utf-8") == answer.raw_text  # strict decoding: no error, nothing replaced
    assert "\ufffd" not in answer.raw_text
    assert len(answer.tokens) == 40  # it still answers at full length (the model never picked <eos>)


@pytest.mark.parametrize("budget", range(1, 8))
def test_the_token_budget_never_cuts_a_character_in_half(tokenizer: ByteLevelBPE, budget: int) -> None:
    for seed in range(6):
        model = BrokenBytesModel(tokenizer, seed)
        generator = Generator(model, tokenizer, [Utf8Only(tokenizer)], use_cache=False)
        answer = generator.generate("你好", SamplingSettings(max_new_tokens=budget))
        answer_bytes(tokenizer, [t.token_id for t in answer.tokens]).decode("utf-8")  # raises if cut


def test_eos_only_at_a_character_boundary(tokenizer: ByteLevelBPE) -> None:
    constraint = Utf8Only(tokenizer)
    lead = next(i for i in range(tokenizer.vocab_size) if tokenizer.token_bytes(i) == b"\xe4")
    state = DecodingState(tokenizer, [tokenizer.bos_id], [lead], budget=50)
    scores = constraint.adjust_logits(torch.zeros(tokenizer.vocab_size), state)
    assert scores[tokenizer.eos_id] == float("-inf")
    allowed = [i for i in range(tokenizer.vocab_size) if scores[i] > float("-inf")]
    assert allowed and all(0x80 <= tokenizer.token_bytes(i)[0] <= 0xBF for i in allowed)
    at_boundary = DecodingState(tokenizer, [tokenizer.bos_id], [], budget=50)
    assert constraint.adjust_logits(torch.zeros(tokenizer.vocab_size), at_boundary)[tokenizer.eos_id] == 0


def brute_force_needed(data: bytes) -> int:
    """Bytes needed to finish ``data`` found by trying completions, or INVALID if none works."""
    for extra in range(4):
        for tail in itertools.product(CONTINUATIONS, repeat=extra):
            try:
                (data + bytes(tail)).decode("utf-8")
                return extra
            except UnicodeDecodeError:
                pass
    return INVALID


def test_bytes_still_needed_agrees_with_brute_force() -> None:
    interesting = [0x00, 0x41, 0x7F, *CONTINUATIONS, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE4, 0xED, 0xEF, 0xF0, 0xF4, 0xF5]
    for length in (1, 2, 3):
        for combo in itertools.product(interesting, repeat=length):
            data = bytes(combo)
            assert bytes_still_needed(b"", data) == brute_force_needed(data), data.hex(" ")


def test_unfinished_tail() -> None:
    text = "蒸馏水😀".encode()
    assert unfinished_tail(text) == b""
    assert unfinished_tail(text[:-1]) == text[-4:-1]
    assert unfinished_tail("蒸".encode()[:2]) == "蒸".encode()[:2]
    assert unfinished_tail(b"ab") == b""


def test_tables_match_asking_the_decoder_about_every_token(tokenizer: ByteLevelBPE) -> None:
    """The table skips the decoder for tokens that cannot continue an unfinished character; it must
    say exactly what the decoder says, for every unfinished character (and none) the tokens can leave."""
    constraint = Utf8Only(tokenizer)
    pendings = {b""} | {bytes([lead]) for lead in range(0xC2, 0xF5)}
    pendings |= {bytes([lead, c]) for lead in range(0xE0, 0xF5) for c in CONTINUATIONS}
    pendings |= {bytes([lead, c, c]) for lead in range(0xF0, 0xF5) for c in CONTINUATIONS}
    pendings = {p for p in pendings if unfinished_tail(p) == p}  # only what an answer can leave unfinished
    assert len(pendings) > 60
    for pending in sorted(pendings):
        expected = [
            bytes_still_needed(pending, piece) if piece else (0 if not pending else INVALID)
            for piece in constraint.pieces
        ]
        assert constraint.needed_table(pending).tolist() == expected, pending.hex(" ")


def test_constraints_of_one_vocabulary_share_their_tables(tokenizer: ByteLevelBPE) -> None:
    """Each pending-bytes table is worked out once per vocabulary, not once per constraint: a second
    Utf8Only of the same tokenizer finds the first one's tables; another vocabulary has its own."""
    first, second = Utf8Only(tokenizer), Utf8Only(tokenizer)
    table = first.tables("蒸".encode()[:1])
    assert second.tables("蒸".encode()[:1]) is table
    other = ByteLevelBPE(300)
    other.train(["完全不同的词表", "another vocabulary"] * 3)
    assert Utf8Only(other).tables("蒸".encode()[:1]) is not table
