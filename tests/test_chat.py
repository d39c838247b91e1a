"""gptf chat: the conversation template, the /commands, and the real thing in a pseudo-terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest

from gptf.generate import SamplingSettings
from gptf.tools.chat import ChatSession, CommandError
from gptf.tools.conversation import Turn, conversation_ids, format_conversation


def test_turns_are_joined_in_the_training_template() -> None:
    history = [Turn("什么是注意力机制？", "注意力让每个词参考前面的词。"), Turn("你是谁", "我是一个小模型。")]
    assert format_conversation(history, "它有什么用") == (
        "用户:什么是注意力机制？\n助手:注意力让每个词参考前面的词。\n用户:你是谁\n助手:我是一个小模型。\n用户:它有什么用\n助手:"
    )
    assert format_conversation([], "  什么是 RoPE？") == "用户:什么是RoPE？\n助手:"  # as data.format_prompt


class _CharTokenizer:
    """One token per character (enough to count lengths)."""

    bos_id = 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def test_oldest_turns_are_dropped_first_to_leave_room_for_the_answer() -> None:
    tok = _CharTokenizer()
    history = [Turn("一" * 10, "二" * 10), Turn("三" * 10, "四" * 10), Turn("五" * 10, "六" * 10)]
    full = conversation_ids(tok, history, "问", seq_len=200, answer_room=20)
    assert full.kept_turns == 3 and len(full.ids) == 1 + len(format_conversation(history, "问"))
    tight = conversation_ids(tok, history, "问", seq_len=90, answer_room=20)
    assert tight.kept_turns == 2 and "一" not in "".join(map(chr, tight.ids[1:]))  # the first turn went
    alone = conversation_ids(tok, history, "问", seq_len=30, answer_room=20)
    assert alone.kept_turns == 0
    with pytest.raises(Exception, match="leaves no room to answer"):
        conversation_ids(tok, [], "问" * 40, seq_len=30, answer_room=5)


def test_commands_change_the_settings_and_reject_bad_values(tiny_run: Path) -> None:
    from gptf.run import load_run

    session = ChatSession(load_run(tiny_run).generator(), SamplingSettings(max_new_tokens=8))
    assert "temperature 0.7 (sampling)" in (session.command("/temp 0.7") or "")
    session.command("/topk 20")
    session.command("/TOPP 0.9")
    assert session.settings == SamplingSettings(max_new_tokens=8, temperature=0.7, top_k=20, top_p=0.9)
    for bad, message in [
        ("/temp -1", r"must be 0 \(greedy\) or between 0.001 and 100"),
        ("/temp", "needs a number"),
        ("/topk 2.5", "not a whole number"),
        ("/topp 0", "above 0"),
        ("/volume 3", "unknown command"),
    ]:
        with pytest.raises(CommandError, match=message):
            session.command(bad)
    session.ask("什么是注意力机制？")
    assert len(session.history) == 1
    assert session.command("/reset") and session.history == []
    assert session.command("/quit") is None


def spawn_chat(tiny_run: Path, tmp_path: Path, *args: str) -> pexpect.spawn:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "160", "OMP_NUM_THREADS": "1", "TERM": "xterm"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "gptf", "chat", "--ckpt", str(tiny_run), "--device", "cpu", *args],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 160),
    )
    child.expect("/help for commands")
    return child


def say_quit(child: pexpect.spawn) -> None:
    """/quit, and the chat says goodbye and ends."""
    child.sendline("/quit")
    child.expect_exact("bye")
    child.expect(pexpect.EOF)


def test_chat_in_a_real_terminal(tiny_run: Path, tmp_path: Path) -> None:
    child = spawn_chat(tiny_run, tmp_path)
    try:
        child.expect_exact("你> ")
        child.sendline("什么是注意力机制？")
        child.expect("助手: ")
        child.expect(r"\(\d+ tokens, ")
        child.expect_exact("你> ")
        child.sendline("")  # empty input: a hint, no answer
        child.expect_exact("(empty: type a question, or /help)")
        child.sendline("/help")
        child.expect_exact("/topp 0.9")
        child.sendline("/temp 0.7")
        child.expect_exact("temperature 0.7 (sampling)")
        child.sendline("/topk abc")
        child.expect_exact("/topk: 'abc' is not a whole number")
        child.sendline("它有什么用？")  # a second turn, with the first as history
        child.expect("助手: ")
        child.sendline("/settings")
        child.expect_exact("2 turn(s) of history")
        child.sendline("/reset")
        child.expect_exact("conversation cleared")
        say_quit(child)
    finally:
        child.close()
    assert child.exitstatus == 0


@pytest.mark.slow
def test_chat_compiles_the_decode_step_before_the_first_question(tiny_run: Path, tmp_path: Path) -> None:
    """--compile: the compiler runs at start-up (and says so), then the chat answers as usual."""
    child = spawn_chat(tiny_run, tmp_path, "--compile")
    try:
        assert "decode step compiled in" in (child.before or "")
        child.expect_exact("你> ")
        child.sendline("什么是注意力机制？")
        child.expect("助手: ")
        child.expect_exact("你> ")
        say_quit(child)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_ctrl_d_leaves_cleanly(tiny_run: Path, tmp_path: Path) -> None:
    child = spawn_chat(tiny_run, tmp_path)
    try:
        child.expect_exact("你> ")
        child.sendeof()  # Ctrl+D at the prompt
        child.expect_exact("bye")
        child.expect(pexpect.EOF)
        output = child.before or ""
    finally:
        child.close()
    assert child.exitstatus == 0 and "Traceback" not in output


def test_chat_with_a_missing_run_is_one_clear_error(tmp_path: Path) -> None:
    from conftest import run_gptf

    result = run_gptf(["chat", "--ckpt", str(tmp_path / "nope")], tmp_path)
    assert result.returncode == 2 and "run directory not found" in result.stderr and "Traceback" not in result.stderr
