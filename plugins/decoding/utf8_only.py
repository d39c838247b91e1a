"""Never print half a Chinese character (乱码).

A byte-level BPE token is a run of bytes, not of characters. A Chinese character is 3
UTF-8 bytes, and a rare one is often split over two or three tokens, e.g.

    蒸 = e8 92 b8   ->   token "e8 92" + token "b8"

If the model picks a token that cannot continue the bytes so far (a lone "b8" at the
start of a character, or "e8" right after "e8 92"), the answer is no longer valid UTF-8
and prints as U+FFFD (�). This constraint lets the model choose only tokens that keep
the answer valid UTF-8:

* it works out the *pending* bytes: the unfinished character at the end of the answer
  (empty at a character boundary);
* a token is allowed when ``pending + token bytes`` is still valid UTF-8, ending either on
  a character boundary or inside a character that later tokens can still finish;
* ``<eos>`` (and the other special tokens, which have no bytes) only at a boundary;
* near the end of the token budget, a token may open a character only if the remaining
  tokens can still finish it (every byte exists as a single token, so one byte per step).

Which tokens fit depends only on the pending bytes, so the answer is worked out once per
distinct pending sequence (a few hundred in Chinese text) and cached: a generation step
costs one dictionary lookup and one masked fill.
"""

from __future__ import annotations

import codecs

import torch

from gptf import hookimpl
from gptf.interfaces import DecodingConstraint, DecodingState, Tokenizer

INVALID = -1  # in a "bytes still needed" table: this token breaks UTF-8 here

#: token bytes of a vocabulary -> its tables (see Utf8Only.__init__); at most this many vocabularies
_SHARED_TABLES: dict[tuple[bytes, ...], dict[bytes, tuple[torch.Tensor, torch.Tensor | None]]] = {}
_SHARED_VOCABULARIES = 4


def utf8_length(lead: int) -> int:
    """How many bytes a character starting with byte ``lead`` has (0: not a lead byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # a continuation byte (80-bf) or a byte UTF-8 never uses (c0, c1, f5-ff)


def unfinished_tail(data: bytes) -> bytes:
    """The bytes of an unfinished last character of ``data`` (``b""`` at a boundary).

    Assumes ``data`` is valid UTF-8 so far, which this constraint guarantees."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        length = utf8_length(byte)
        if length == 0:  # continuation byte: the lead is further back
            continue
        return data[-back:] if length > back else b""
    return b""


def bytes_still_needed(pending: bytes, piece: bytes) -> int:
    """Bytes needed to finish the last character of ``pending + piece``, or INVALID."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(pending + piece, final=False)
    except UnicodeDecodeError:
        return INVALID
    buffered = decoder.getstate()[0]  # the unfinished tail the decoder holds back
    if not buffered:
        return 0
    needed = utf8_length(buffered[0]) - len(buffered)
    if len(buffered) >= 2:  # the second byte decides (e.g. "ed a0" could only become a surrogate)
        try:
            (buffered + b"\x80" * needed).decode("utf-8")
        except UnicodeDecodeError:
            return INVALID
    return needed


class Utf8Only(DecodingConstraint):
    """Only tokens that keep the answer valid UTF-8 may be chosen."""

    thread_safe = True  # (see DecodingConstraint)

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.eos_id = tokenizer.eos_id
        vocab_size = tokenizer.vocab_size
        self.pieces = [tokenizer.token_bytes(i) for i in range(vocab_size)]  # b"" for special tokens
        # the tokens that begin with a continuation byte (80-bf): the only ones that can go on
        # with an unfinished character; every other token breaks it, no need to ask a decoder
        self._continuing = [i for i, p in enumerate(self.pieces) if p and utf8_length(p[0]) == 0]
        # pending bytes -> ((V,) bytes still needed after each token, (V,) True: not allowed, or None
        # where no token fits), worked out on first use and stored in one step, so that answers
        # decoded side by side (gptf.generate.greedy_answers) never see half an entry; shared by every
        # Utf8Only of the same vocabulary, so the generators of one process (gptf eval's, a chat's)
        # work each entry out once (~1 ms each; measured: 23 -> 11 us per token over 60 answers)
        vocabulary = tuple(self.pieces)
        if vocabulary not in _SHARED_TABLES and len(_SHARED_TABLES) >= _SHARED_VOCABULARIES:
            _SHARED_TABLES.clear()  # (many tokenizers in one process, e.g. tests: keep memory bounded)
        self._tables = _SHARED_TABLES.setdefault(vocabulary, {})

    def needed_table(self, pending: bytes) -> torch.Tensor:
        """For every token: bytes still needed after it, INVALID if it breaks UTF-8."""
        return self.tables(pending)[0]

    def tables(self, pending: bytes) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`needed_table` and which tokens are not allowed (None: no token fits, in a tokenizer
        without single-byte tokens, so there is nothing valid to offer)."""
        tables = self._tables.get(pending)
        if tables is None:
            if pending:  # an unfinished character: only tokens that begin by continuing it can fit
                values = [INVALID] * len(self.pieces)
                for i in self._continuing:
                    values[i] = bytes_still_needed(pending, self.pieces[i])
            else:  # at a character boundary: special tokens (no bytes) fit too
                values = [bytes_still_needed(b"", piece) if piece else 0 for piece in self.pieces]
            table = torch.tensor(values, dtype=torch.int8)
            allowed = table >= 0
            tables = (table, ~allowed if bool(allowed.any()) else None)
            self._tables[pending] = tables
        return tables

    def pending_bytes(self, new_ids: list[int]) -> bytes:
        """The unfinished character at the end of the answer so far (at most 3 bytes)."""
        tail = b""
        for token in reversed(new_ids):
            tail = self.pieces[token] + tail
            if len(tail) >= 3:
                break
        return unfinished_tail(tail)

    def adjust_logits(self, logits: torch.Tensor, state: DecodingState) -> torch.Tensor:
        needed, blocked = self.tables(self.pending_bytes(state.new_ids))
        if blocked is None:  # a tokenizer without single-byte tokens: nothing valid to offer
            return logits
        if state.budget is not None:
            left_after = state.budget - len(state.new_ids) - 1  # tokens left after this one
            if left_after < 3:  # only then can the budget cut a character in half
                unfinishable = blocked | (needed > left_after)
                if not bool(unfinishable.all()):
                    blocked = unfinishable
        return logits.masked_fill(blocked, float("-inf"))


@hookimpl
def register_decoding_constraints() -> dict[str, type]:
    return {"utf8_only": Utf8Only}
