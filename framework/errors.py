"""Errors meant for people: one clear message, no traceback unless ``--debug``."""

from __future__ import annotations

import difflib
import errno
import os
import reprlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: The most characters of one value (or one problem line) an error message shows.
SHOWN_CHARS = 80
PROBLEM_CHARS = 400
PROBLEMS_SHOWN = 40


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
        lines = "\n".join(f"  - {clip(p, PROBLEM_CHARS)}" for p in problems[:PROBLEMS_SHOWN])
        if len(problems) > PROBLEMS_SHOWN:
            lines += f"\n  ... and {len(problems) - PROBLEMS_SHOWN} more"
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{clip(source, PROBLEM_CHARS)}: {len(problems)} {noun} in the recipe:\n{lines}")


class PluginError(GptfError):
    """A plugin failed to load, registered nothing, or a component it provides failed."""


class DataError(GptfError):
    """Bad training or evaluation data (names file:line)."""


class CheckpointError(GptfError):
    """A run directory or checkpoint file that cannot be used (names the path)."""


class RunFolderBusy(CheckpointError):
    """Another live gptf process is writing this run folder (names it and the process id)."""


class TrainingStopped(GptfError):
    """Training stopped on purpose (NaN loss, interrupt) after saving what could be saved."""

    exit_code = 3


class Interrupted(TrainingStopped):
    """Ctrl+C, SIGTERM or a closed terminal stopped training after a resumable checkpoint was saved."""

    exit_code = 130  # the shell's convention for "ended by Ctrl+C"


class SaveFailed(TrainingStopped):
    """Writing the run failed (disk full, ...); the message says where the training was kept."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def choices_text(choices: Iterable[str]) -> str:
    """Format valid choices for an error message: ``a, b, c``."""
    names = sorted(choices)
    return ", ".join(names) if names else "(none registered)"


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters (``...`` and the count of the rest at the end)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


class _Repr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # past Python's 4,300-digit limit for str()
            return f"<an int of about {int(x.bit_length() * 0.30103):,} digits>"


_REPR = _Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = SHOWN_CHARS, SHOWN_CHARS, SHOWN_CHARS


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as an error message shows it: its repr, never more than ``limit`` characters,
    whatever its size (a huge list or a 5,000-digit number is abbreviated, not expanded)."""
    return clip(_REPR.repr(value), limit)


#: What a path error means for the person who typed the path (the system's words are terse).
_PATH_REASONS = {
    errno.ENOTDIR: "not a folder (a part of this path is a file)",
    errno.EEXIST: "is a file where a folder is needed",
    errno.EISDIR: "is a folder where a file is needed",
}


def path_kind(path: Path) -> str:
    """What stands at ``path`` when it is not a regular file: a folder, or a device, pipe or socket."""
    return "a folder" if path.is_dir() else "a device, pipe or socket"


#: How many folder entries :func:`closest_path` looks at, at most (a mistyped path under a large home folder).
_MOST_ENTRIES_SEARCHED = 2000


def closest_path(path: Path, accept: Callable[[Path], bool], depth: int = 2) -> Path | None:
    """For a ``path`` that does not exist: the existing path most like it that ``accept`` takes, looked
    for from the nearest folder of ``path`` that exists, down to ``depth`` folders below it. It finds
    a misspelt name (checkpoints/teacher3m), a misspelt folder (checkpoint/teacher_3m) and a folder left
    out (teacher_3m.yaml for recipes/teacher_3m.yaml). None when no name is close enough (difflib,
    0.6 as for component names). Hidden folders are not searched.

    >>> import tempfile; root = Path(tempfile.mkdtemp()); (root / "data").mkdir()
    >>> _ = (root / "data" / "train.jsonl").write_text("")
    >>> closest_path(root / "data" / "trian.jsonl", lambda p: p.is_file()) == root / "data" / "train.jsonl"
    True
    """
    base = path.parent
    while not os.path.isdir(base) and base != base.parent:  # (isdir: False where it may not look, too)
        base = base.parent
    candidates: list[Path] = []
    level, searched = [base], 0
    for _ in range(depth + 1):
        below: list[Path] = []
        for folder in level:
            if searched >= _MOST_ENTRIES_SEARCHED:
                break
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError:  # unreadable: not searched
                continue
            for entry in entries[: _MOST_ENTRIES_SEARCHED - searched]:
                searched += 1
                if entry.name.startswith("."):
                    continue
                found = Path(entry.path)
                try:  # (a place this user may not look into, such as /proc/1/cwd, is passed over)
                    if accept(found):
                        candidates.append(found)
                    if entry.is_dir(follow_symlinks=False):
                        below.append(found)
                except OSError:
                    continue
        level = below
    wanted = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    def likeness(candidate: Path) -> tuple[float, float]:
        name = difflib.SequenceMatcher(None, path.stem, candidate.stem).ratio()
        return name, difflib.SequenceMatcher(None, wanted, str(candidate.relative_to(base))).ratio()

    scored = [(likeness(c), c) for c in candidates]
    scored = [(score, c) for score, c in scored if score[0] >= 0.6]
    return max(scored, key=lambda item: sum(item[0]))[1] if scored else None


def os_error_text(error: OSError) -> str:
    """``path: no space left on device``: what a failed read or write says to a person."""
    reason = _PATH_REASONS.get(error.errno) or (error.strerror or str(error) or type(error).__name__).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    where = error.filename if error.filename is not None else None
    return f"{where}: {reason}" if where else reason
