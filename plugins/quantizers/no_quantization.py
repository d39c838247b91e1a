"""No quantization: keep the fp32 weights only."""

from __future__ import annotations

from gptf import hookimpl


def no_quantization() -> None:
    return None


@hookimpl
def register_quantizers() -> dict[str, object]:
    return {"none": no_quantization}
