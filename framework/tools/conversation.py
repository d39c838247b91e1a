"""A multi-turn conversation, laid out in the same template the model was trained on.

One question/answer pair in the training data is ``用户:{prompt}\\n助手:{completion}``. A
conversation simply puts the earlier pairs before the new question, one per line:

    <bos>用户:什么是注意力机制？
    助手:注意力让每个词按相关程度参考前面的词。
    用户:它有什么用？
    助手:                                   <- the model continues from here

The model only sees ``seq_len`` tokens, so when the conversation grows too long the
*oldest* turns are dropped first, keeping room for the answer. (Our model was trained on
single questions, so earlier turns are context it has never been taught to use; watch
what it does with them, and /reset to start over.)
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from gptf.data import BROKEN_TEXT_HINT, format_prompt, has_broken_character, normalize_prompt
from gptf.errors import GptfError
from gptf.interfaces import Tokenizer

TURN_SEPARATOR = "\n"


@attrs.frozen
class Turn:
    user: str
    assistant: str


def format_conversation(history: Sequence[Turn], question: str) -> str:
    """The text the model continues: earlier turns, then the new question and ``助手:``."""
    turns = [format_prompt(turn.user) + turn.assistant for turn in history]
    return TURN_SEPARATOR.join([*turns, format_prompt(question)])


@attrs.frozen
class Context:
    ids: list[int]  # <bos> + the formatted conversation
    kept_turns: int  # how many of the earlier turns fitted


def conversation_ids(
    tokenizer: Tokenizer, history: Sequence[Turn], question: str, seq_len: int, answer_room: int
) -> Context:
    """Token ids for the model, dropping the oldest turns until ``answer_room`` tokens are left."""
    if not normalize_prompt(question):  # nothing left but spaces and invisible characters
        raise GptfError("the question is empty")
    if has_broken_character(question):
        raise GptfError(f"the question cannot be answered: {BROKEN_TEXT_HINT}")
    if any(has_broken_character(turn.user + turn.assistant) for turn in history):
        raise GptfError(f"an earlier turn of the conversation cannot be read: {BROKEN_TEXT_HINT}")
    history = list(history)
    while True:
        ids = [tokenizer.bos_id, *tokenizer.encode(format_conversation(history, question))]
        if len(ids) + answer_room <= seq_len or not history:
            break
        history = history[1:]  # forget the oldest turn
    if len(ids) >= seq_len:
        raise GptfError(
            f"the question is {len(ids)} tokens long, which leaves no room to answer "
            f"(model.seq_len={seq_len}); ask a shorter question"
        )
    return Context(ids, len(history))
