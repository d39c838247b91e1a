"""Byte-level BPE (as in GPT-2), trained with Hugging Face ``tokenizers``.

Text is first turned into UTF-8 bytes, so any character can be written (no <unk>);
then the most frequent neighbouring pairs are merged again and again until the
vocabulary has ``vocab_size`` entries. A Chinese character is 3 bytes: frequent ones
become single tokens, rare ones stay as 2-3 byte tokens. That is why a *byte-level
decoder* is needed: it joins the bytes back before turning them into characters, so a
character split across tokens is never printed as garbage (乱码).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from gptf import hookimpl
from gptf.interfaces import SPECIAL_TOKENS


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte -> printable-character table used by ByteLevel."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class ByteLevelBPE:
    def __init__(self, vocab_size: int, min_frequency: int = 2) -> None:
        self.requested_size = vocab_size
        self.min_frequency = min_frequency
        self.hf: HFTokenizer | None = None

    # -- building -------------------------------------------------------------
    def train(self, texts: Iterable[str]) -> None:
        tokenizer = HFTokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()  # bytes back to text, whole characters only
        trainer = trainers.BpeTrainer(
            vocab_size=self.requested_size,
            min_frequency=self.min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        self._use(tokenizer)

    def load(self, path: Path) -> None:
        tokenizer = HFTokenizer.from_file(str(path))
        if not isinstance(tokenizer.decoder, decoders.ByteLevel):
            tokenizer.decoder = decoders.ByteLevel()
        self._use(tokenizer)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._require().save(str(path))

    def _use(self, tokenizer: HFTokenizer) -> None:
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}")
        self.hf = tokenizer
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
        self._special_ids = {self.bos_id, self.eos_id, self.pad_id, self.unk_id}

    def _require(self) -> HFTokenizer:
        if self.hf is None:
            raise RuntimeError("the tokenizer is neither trained nor loaded")
        return self.hf

    # -- using ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._require().get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._require().encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._require().decode(list(ids), skip_special_tokens=True)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._special_ids:
            return b""
        piece = self._require().id_to_token(token_id)
        if piece is None:
            return b""
        table = byte_decoder()
        return bytes(table[ch] for ch in piece if ch in table)


@hookimpl
def register_tokenizers() -> dict[str, type]:
    return {"byte_bpe": ByteLevelBPE}
