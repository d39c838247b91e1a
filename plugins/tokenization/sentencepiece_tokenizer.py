"""SentencePiece (Kudo & Richardson, 2018), Google's tokenizer library: an optional extra.

    pip install "gptf[sentencepiece]"

It learns pieces straight from raw text (BPE or the unigram language model), keeps
spaces as the visible character ▁, and with byte fallback writes a character it never
saw as UTF-8 byte tokens. The seed article suggests it for larger vocabularies: it
insists on covering at least 98% of the characters of the training texts, so for our
~1,300 distinct Chinese characters it needs a vocabulary of roughly 1,600 or more
(``recipes/ablations/sentencepiece.yaml`` uses 2,000).

The trained model is a binary protobuf; we store it base64-encoded inside a small JSON
file, so the run directory keeps its usual ``tokenizer.json``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gptf import hookimpl
from gptf.errors import PluginError
from gptf.interfaces import SPECIAL_TOKENS

FORMAT = "gptf-sentencepiece"


def import_sentencepiece() -> Any:
    """Import the library only when this tokenizer is actually used."""
    try:
        import sentencepiece
    except ImportError:
        raise PluginError(
            "the 'sentencepiece' tokenizer needs the SentencePiece library, an optional extra: "
            'pip install "gptf[sentencepiece]"'
        ) from None
    return sentencepiece


class SentencePieceTokenizer:
    def __init__(self, vocab_size: int, model_type: str = "bpe", character_coverage: float = 0.9995) -> None:
        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
        self.spm = import_sentencepiece()
        self.requested_size = vocab_size
        self.model_type = model_type
        self.character_coverage = character_coverage
        self.proto: bytes | None = None

    # -- building -------------------------------------------------------------
    def train(self, texts: Iterable[str]) -> None:
        bos, eos, pad, unk = SPECIAL_TOKENS
        model = io.BytesIO()
        try:
            self.spm.SentencePieceTrainer.train(
                sentence_iterator=iter(list(texts)),
                model_writer=model,
                vocab_size=self.requested_size,
                model_type=self.model_type,
                character_coverage=self.character_coverage,
                byte_fallback=True,  # unseen characters become UTF-8 byte tokens, never <unk>
                normalization_rule_name="identity",  # keep full-width ，？ as they are
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                split_digits=True,
                bos_id=0,
                eos_id=1,
                pad_id=2,
                unk_id=3,
                bos_piece=bos,
                eos_piece=eos,
                pad_piece=pad,
                unk_piece=unk,
                num_threads=1,  # deterministic
                minloglevel=2,
            )
        except RuntimeError as exc:
            too_high = "too high" in str(exc)
            raise PluginError(
                f"SentencePiece could not train a vocabulary of {self.requested_size}: {exc}",
                hint="the training texts do not have that many different pieces: lower tokenizer.vocab_size"
                if too_high
                else "SentencePiece must cover >= 98% of the characters: raise tokenizer.vocab_size",
            ) from exc
        self._use(model.getvalue())

    def save(self, path: Path) -> None:
        if self.proto is None:
            raise RuntimeError("the tokenizer is neither trained nor loaded")
        data = {"format": FORMAT, "model": base64.b64encode(self.proto).decode("ascii")}
        Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")

    def load(self, path: Path) -> None:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f'{path} is not a SentencePiece tokenizer file (no "format": "{FORMAT}")')
        self._use(base64.b64decode(data["model"]))

    def _use(self, proto: bytes) -> None:
        self.proto = proto
        self.sp = self.spm.SentencePieceProcessor(model_proto=proto)
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (self.sp.piece_to_id(t) for t in SPECIAL_TOKENS)

    # -- using ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def token_bytes(self, token_id: int) -> bytes:
        if self.sp.is_control(token_id) or self.sp.is_unknown(token_id):
            return b""
        piece = self.sp.id_to_piece(token_id)
        if self.sp.is_byte(token_id):
            return bytes([int(piece[3:5], 16)])  # "<0xE9>"
        return piece.replace("▁", " ").encode("utf-8")


@hookimpl
def register_tokenizers() -> dict[str, type]:
    return {"sentencepiece": SentencePieceTokenizer}
