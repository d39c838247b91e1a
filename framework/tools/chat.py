"""``gptf chat``: talk to a trained model in the terminal.

Each question is answered with the conversation so far (:mod:`gptf.tools.conversation`).
Lines starting with ``/`` change the sampling knobs while you chat, so a class can see
what temperature, top-k and top-p do to the same question.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import attrs
from rich.console import Console

from gptf.data import BROKEN_TEXT_HINT
from gptf.errors import GptfError, shown
from gptf.generate import Generator, SamplingSettings
from gptf.recipe.limits import sampling_problems
from gptf.tools.conversation import Turn, conversation_ids

PROMPT = "你> "
HELP = """\
commands (命令):
  /temp 0.7    temperature 温度: 0 = greedy (always the most likely token), higher = more varied
  /topk 20     top-k: sample only among the 20 most likely tokens (0 = off)
  /topp 0.9    top-p: sample only among the most likely tokens that together reach 90% (1 = off)
  /beams 4     beam search 束搜索: with temperature 0, the most likely of 4 candidate answers (1 = plain greedy)
  /memory off  answer without the memory of the taught answers (记忆), the model alone; /memory on: with it
  /reset       forget the conversation so far (清空对话)
  /settings    show the current settings
  /help        this help
  /quit        leave (also Ctrl+D)"""


#: The /commands that change a sampling setting: command -> (setting, number type).
SETTINGS: dict[str, tuple[str, Callable[[str], float]]] = {
    "/temp": ("temperature", float),
    "/topk": ("top_k", int),
    "/topp": ("top_p", float),
}


class CommandError(ValueError):
    """A mistyped /command: shown to the user, the chat goes on."""


@attrs.define
class ChatSession:
    """The state of one chat: the model, the knobs and the turns so far."""

    generator: Generator
    settings: SamplingSettings
    history: list[Turn] = attrs.field(factory=list)
    seed: int | None = None

    def ask(self, question: str) -> tuple[str, str]:
        """Answer ``question`` in the context of the conversation; returns (answer, note)."""
        seq_len = self.generator.config.seq_len
        context = conversation_ids(
            self.generator.tokenizer, self.history, question, seq_len, self.settings.max_new_tokens
        )
        answer = self.generator.generate(question, self.settings, seed=self.seed, context_ids=context.ids)
        dropped = len(self.history) - context.kept_turns
        self.history.append(Turn(question, answer.text))
        note = f"{len(answer.tokens)} tokens, {answer.tokens_per_s:,.0f} tokens/s"
        if answer.declined:
            threshold = self.generator.answer_filter.threshold  # type: ignore[union-attr]
            note += (
                f"; declined: confidence {answer.confidence:.2f} below {threshold:.2f}, "
                f"the model's own answer was: {answer.model_text}"
            )
        elif answer.confidence is not None:
            note += f", confidence {answer.confidence:.2f}"
        if answer.recalled:
            note += f"; memory recalled {answer.recalled} ({answer.recalled_similarity:.2f})"
        if dropped:
            note += f"; the {dropped} oldest turn(s) no longer fit in seq_len={seq_len} and were left out"
        return answer.text, note

    def command(self, line: str) -> str | None:
        """Run a /command; returns the text to show, or None to quit."""
        name, _, argument = line.strip().partition(" ")
        name, argument = name.lower(), argument.strip()
        if name in ("/quit", "/exit", "/q"):
            return None
        if name == "/help":
            return HELP
        if name == "/reset":
            self.history.clear()
            return "conversation cleared (对话已清空)"
        if name == "/settings":
            return self.describe()
        if name == "/beams":
            value = parse_number(name, argument, int)
            problem = sampling_problems({"beams": value}).get("beams")
            if problem:
                raise CommandError(f"{name}: {problem}")
            self.generator.beams = int(value)
            return self.describe()
        if name == "/memory":
            return self.switch_memory(argument)
        setting = SETTINGS.get(name)
        if setting is None:
            raise CommandError(f"unknown command {shown(name, 40)}; type /help for the list")
        key, kind = setting
        value = parse_number(name, argument, kind)
        problem = sampling_problems({key: value}, seq_len=self.generator.config.seq_len).get(key)
        if problem:  # the same rules as --temperature, the recipe and gptf serve
            raise CommandError(f"{name}: {problem}")
        self.settings = attrs.evolve(self.settings, **{key: value})
        return self.describe()

    def switch_memory(self, argument: str) -> str:
        """``/memory on`` or ``/memory off``: answer with or without the run's generation.memory."""
        if argument.lower() not in ("on", "off"):
            raise CommandError("/memory needs on or off, e.g. /memory off")
        if self.generator.given_memory is None:
            raise CommandError(
                "this chat has no memory of the taught answers (the run's recipe has no generation.memory, "
                "or gptf chat was started with --no-memory)"
            )
        self.generator.set_memory(argument.lower() == "on")
        return self.describe()

    def describe(self) -> str:
        s = self.settings
        beams = self.generator.beams
        mode = "sampling" if s.temperature else "greedy" if beams == 1 else f"greedy, beam search: {beams} candidates"
        memory = ""
        if self.generator.given_memory is not None:
            memory = ", memory of the taught answers " + ("on" if self.generator.memory is not None else "off")
        return (
            f"temperature {s.temperature:g} ({mode}), top-k {s.top_k or 'off'}, top-p {s.top_p:g}{memory}, "
            f"max {s.max_new_tokens} new tokens, {len(self.history)} turn(s) of history"
        )


def parse_number(name: str, text: str, kind: Callable[[str], float]) -> float:
    if not text:
        raise CommandError(f"{name} needs a number, e.g. {name} {'20' if kind is int else '0.7'}")
    try:
        return kind(text)
    except ValueError:  # also a number past Python's 4,300-digit limit
        noun = "whole number" if kind is int else "number"
        raise CommandError(f"{name}: {shown(text, 40)} is not a {noun} gptf can use") from None


def chat_loop(session: ChatSession, console: Console, read: Callable[[str], str] = input) -> None:
    """Read a line, answer it, repeat; an empty line is ignored, end of file (Ctrl+D) leaves."""
    with contextlib.suppress(ImportError):  # arrow keys and line history for input(), where available
        import readline  # noqa: F401
    console.print("type a question and press Enter; /help for commands, Ctrl+D or /quit to leave", style="dim")
    while True:
        try:
            line = read(PROMPT)
        except EOFError:  # Ctrl+D, or the end of piped input
            console.print()
            break
        except UnicodeDecodeError:  # the terminal sent bytes that are not UTF-8
            console.print(f"that line could not be read: {BROKEN_TEXT_HINT}", style="red", markup=False)
            continue
        except KeyboardInterrupt:  # Ctrl+C at the prompt
            console.print()
            break
        line = line.strip()
        if not line:
            console.print("(empty: type a question, or /help)", style="dim")
            continue
        if line.startswith("/"):
            try:
                reply = session.command(line)
            except CommandError as exc:
                console.print(str(exc), style="red", markup=False)
                continue
            if reply is None:
                break
            console.print(reply, style="cyan", markup=False)
            continue
        try:
            with console.status("thinking...", spinner="dots"):
                answer, note = session.ask(line)
        except GptfError as exc:
            console.print(str(exc), style="red", markup=False)
            continue
        except KeyboardInterrupt:
            console.print("[yellow](answer interrupted)[/]")
            continue
        console.print("助手: ", end="", style="bold green")
        console.print(answer or "(no answer)", markup=False, highlight=False)
        console.print(f"({note})", style="dim", markup=False)
    console.print("bye (再见)")
