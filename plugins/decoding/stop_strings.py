"""Stop as soon as the answer contains one of the stop strings (e.g. "。" or a newline).
The stop string itself is kept; the engine trims trailing whitespace."""

from __future__ import annotations

from gptf import hookimpl
from gptf.interfaces import DecodingConstraint, DecodingState, Tokenizer


class StopStrings(DecodingConstraint):
    thread_safe = True  # (see DecodingConstraint)

    def __init__(self, tokenizer: Tokenizer, stops: list[str] = []) -> None:  # noqa: B006
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        self.stops = list(stops)

    def should_stop(self, state: DecodingState) -> bool:
        text = state.text
        return any(stop in text for stop in self.stops)


@hookimpl
def register_decoding_constraints() -> dict[str, type]:
    return {"stop_strings": StopStrings}
