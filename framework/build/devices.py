"""Where the model computes: the CPU, an NVIDIA GPU (CUDA) or an Apple GPU (MPS).

``--device auto`` picks the fastest one present: CUDA, then MPS, then the CPU. Asking for
a device that is not there is a clear error, never a crash halfway through a run. The
model, the KV cache and every batch must live on the same device; the decoding loop reads
the scores back to the CPU (they are only one row of ``vocab_size`` numbers).
"""

from __future__ import annotations

import os

import torch

from gptf.errors import GptfError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|mps`` (or ``cuda:1``) into a :class:`torch.device` that exists here."""
    choice = name.strip().lower()
    kind = choice.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise GptfError(f"unknown device '{name}'; valid choices: {', '.join(DEVICE_CHOICES)}")
    if kind == "auto":
        if cuda_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not cuda_available():
        raise GptfError(
            f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, "
            f"built {'with' if torch.version.cuda else 'without'} CUDA)",
            hint="use --device cpu, or --device auto to take the best device present",
        )
    if kind == "mps" and not mps_available():
        raise GptfError(
            f"--device {name}: Apple's MPS backend is not available here (it needs a Mac with Apple silicon)",
            hint="use --device cpu, or --device auto to take the best device present",
        )
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise GptfError(f"--device {name}: {exc}") from exc
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GptfError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0 ...)")
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights live on (the CPU for a model without parameters)."""
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def total_memory() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
