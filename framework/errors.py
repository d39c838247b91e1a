"""Errors meant for people: one clear message, no traceback unless ``--debug``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GptfError(Exception):
    """An expected failure (bad recipe, missing file, unknown component...).

    The CLI prints ``str(error)`` and exits with :attr:`exit_code`; anything that is
    not a ``GptfError`` is a bug and shows a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class RecipeError(GptfError):
    """One or more problems in a recipe, each with its key path (``model.norm.eps``)."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun} in the recipe:\n{lines}")


class PluginError(GptfError):
    """A plugin failed to load, registered nothing, or a component it provides failed."""


class DataError(GptfError):
    """Bad training or evaluation data (names file:line)."""


class CheckpointError(GptfError):
    """A run directory or checkpoint file that cannot be used (names the path)."""


class TrainingStopped(GptfError):
    """Training stopped on purpose (NaN loss, interrupt) after saving what could be saved."""

    exit_code = 3


class Interrupted(TrainingStopped):
    """Ctrl+C, SIGTERM or a closed terminal stopped training after a resumable checkpoint was saved."""

    exit_code = 130  # the shell's convention for "ended by Ctrl+C"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def choices_text(choices: Iterable[str]) -> str:
    """Format valid choices for an error message: ``a, b, c``."""
    names = sorted(choices)
    return ", ".join(names) if names else "(none registered)"
