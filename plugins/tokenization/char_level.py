"""Character-level tokenizer: every character is one token.

A natural fit for Chinese, where a character already carries meaning: the model never
sees half a character, and a token is exactly what a student reads. The vocabulary is

    <bos> <eos> <pad> <unk>         the 4 special tokens
    <0x00> ... <0xFF>               256 byte tokens (byte fallback)
    的 是 一 ...                    the most frequent characters of the training texts

until ``vocab_size`` is reached. A character that did not make it into the vocabulary
is written as its UTF-8 bytes (a rare Chinese character becomes 3 byte tokens), so no
text is ever lost and ``<unk>`` is never needed. With ``byte_fallback: false`` the 256
byte slots go to characters instead and unknown characters become ``<unk>``.

If the texts have fewer distinct characters than there is room for, the remaining ids
are reserved (never produced), so the vocabulary is exactly the size the recipe asks for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from gptf import hookimpl
from gptf.interfaces import SPECIAL_TOKENS

FORMAT = "gptf-char-tokenizer"


def byte_token(value: int) -> str:
    return f"<0x{value:02X}>"


class CharTokenizer:
    def __init__(self, vocab_size: int, byte_fallback: bool = True) -> None:
        smallest = len(SPECIAL_TOKENS) + (256 if byte_fallback else 0) + 1
        if vocab_size < smallest:
            raise ValueError(
                f"vocab_size {vocab_size} is too small: the {len(SPECIAL_TOKENS)} special tokens"
                + (" and 256 byte tokens" if byte_fallback else "")
                + f" leave no room for characters (need at least {smallest})"
            )
        self.requested_size = vocab_size
        self.byte_fallback = byte_fallback
        self.tokens: list[str] = []

    # -- building -------------------------------------------------------------
    def train(self, texts: Iterable[str]) -> None:
        counts = Counter(ch for text in texts for ch in text)
        fixed = list(SPECIAL_TOKENS) + ([byte_token(b) for b in range(256)] if self.byte_fallback else [])
        room = self.requested_size - len(fixed)
        chars = sorted(counts, key=lambda ch: (-counts[ch], ch))[:room]  # most frequent first; ties by code point
        reserved = [f"<reserved_{i}>" for i in range(room - len(chars))]
        self._use(fixed + chars + reserved, self.byte_fallback)

    def save(self, path: Path) -> None:
        data = {"format": FORMAT, "byte_fallback": self.byte_fallback, "tokens": self._require()}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    def load(self, path: Path) -> None:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f'{path} is not a character-level tokenizer file (no "format": "{FORMAT}")')
        self._use(list(data["tokens"]), bool(data["byte_fallback"]))

    def _use(self, tokens: list[str], byte_fallback: bool) -> None:
        self.tokens = tokens
        self.byte_fallback = byte_fallback
        self.char_ids = {t: i for i, t in enumerate(tokens) if len(t) == 1}  # real characters are 1 long
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (tokens.index(t) for t in SPECIAL_TOKENS)
        self.byte_ids = [tokens.index(byte_token(b)) for b in range(256)] if byte_fallback else []

    def _require(self) -> list[str]:
        if not self.tokens:
            raise RuntimeError("the tokenizer is neither trained nor loaded")
        return self.tokens

    # -- using ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._require())

    def encode(self, text: str) -> list[int]:
        self._require()
        ids: list[int] = []
        for ch in text:
            known = self.char_ids.get(ch)
            if known is not None:
                ids.append(known)
            elif self.byte_fallback:
                ids.extend(self.byte_ids[b] for b in ch.encode("utf-8"))
            else:
                ids.append(self.unk_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        data = b"".join(self.token_bytes(i) for i in ids)
        return data.decode("utf-8", errors="replace")  # a cut-off byte sequence shows as �

    def token_bytes(self, token_id: int) -> bytes:
        token = self._require()[token_id]
        if len(token) == 1:
            return token.encode("utf-8")
        if token.startswith("<0x") and len(token) == 6:
            return bytes([int(token[3:5], 16)])
        return b""  # special and reserved tokens stand for no text


@hookimpl
def register_tokenizers() -> dict[str, type]:
    return {"char": CharTokenizer}
