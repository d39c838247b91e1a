"""The bounds of the numbers a person types, checked in one place.

The sampling settings arrive from four places: the recipe's ``generation`` section, the
options of ``gptf generate`` / ``gptf chat``, chat's ``/temp``-style commands and the JSON
of ``gptf serve``. All four call :func:`sampling_problems`, so they accept and refuse exactly
the same values; each caller only names the setting its own way (``generation.top_p``,
``--top-p``, ``/topp``, ``top_p``).

Why bounds: ``temperature: 1e-45`` divides the scores into infinities, ``nan`` passes every
``<`` test, a 5,000-digit seed overflows the random generator. A value outside its range is
refused with what the range is, before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gptf.errors import shown

INT64_MAX = 2**63 - 1
#: temperature 0 means greedy; anything else must lie in this range.
TEMPERATURE_RANGE = (1e-3, 100.0)
TOP_K_MAX = 2**31 - 1
REPETITION_PENALTY_MAX = 100.0
SEED_RANGE = (0, INT64_MAX)
THREADS_MAX = 1024
#: Layers are Python objects built one by one (~10 ms each): past this, even a dry build takes minutes.
LAYERS_MAX = 1024

#: The sampling settings :func:`sampling_problems` knows, in the order they are reported.
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "max_new_tokens", "repetition_penalty", "seed", "beams")
#: Beam search keeps this many candidate answers at most: each one costs a row of every model call.
BEAMS_MAX = 32
#: generation.memory recalls at most this many taught answers per question (each is followed every step).
MEMORY_NEIGHBOURS_MAX = 1000


def is_number(value: Any) -> bool:
    """A real, finite number (``True`` is not a number here, nor ``nan`` or ``inf``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def is_whole(value: Any) -> bool:
    """A whole number: an int, or a finite float like ``12.0`` (JSON may send either)."""
    return is_number(value) and (isinstance(value, int) or float(value).is_integer())


def sampling_problems(values: Mapping[str, Any], *, seq_len: int | None = None) -> dict[str, str]:
    """What is wrong with each sampling setting in ``values`` (a key missing or ``None`` is
    not checked): ``{"temperature": "must be 0 (greedy) or between 0.001 and 100, got inf"}``.

    ``seq_len``: the model's context, the most new tokens an answer can have.
    """
    problems: dict[str, str] = {}
    given = {key: values[key] for key in SAMPLING_KEYS if values.get(key) is not None}
    low, high = TEMPERATURE_RANGE
    checks = {
        "temperature": (
            lambda v: is_number(v) and (v == 0 or low <= v <= high),
            f"must be 0 (greedy) or between {low:g} and {high:g}",
        ),
        "top_k": (lambda v: _whole_in(v, 0, TOP_K_MAX), "must be a whole number, 0 (off) or more"),
        "top_p": (lambda v: is_number(v) and 0 < v <= 1, "must be above 0 and at most 1 (1 = off)"),
        "max_new_tokens": (
            lambda v: _whole_in(v, 1, seq_len if seq_len is not None else INT64_MAX),
            "must be a whole number from 1" + (f" to {seq_len} (the model's seq_len)" if seq_len else ""),
        ),
        "repetition_penalty": (
            lambda v: is_number(v) and 0 < v <= REPETITION_PENALTY_MAX,
            f"must be above 0 and at most {REPETITION_PENALTY_MAX:g} (1 = off)",
        ),
        "seed": (lambda v: _whole_in(v, *SEED_RANGE), f"must be a whole number from 0 to {SEED_RANGE[1]}"),
        "beams": (lambda v: _whole_in(v, 1, BEAMS_MAX), f"must be a whole number from 1 (greedy) to {BEAMS_MAX}"),
    }
    for key, value in given.items():
        ok, rule = checks[key]
        if not ok(value):
            problems[key] = f"{rule}, got {shown(value)}"
    return problems


def _whole_in(value: Any, low: int, high: int) -> bool:
    return is_whole(value) and low <= value <= high


def int_problem(value: int, low: int, high: int) -> str | None:
    """``must be from 0 to 9223372036854775807, got <an int of about 23 digits>``, or None."""
    if low <= value <= high:
        return None
    return f"must be from {low} to {high}, got {shown(value)}"
