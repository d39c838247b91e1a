"""Choosing how to run fast on *this* machine, by looking and measuring rather than assuming.

* :func:`choose_precision` — ``training.precision: auto``: bf16 only where the hardware does
  bf16 natively (x86 flags ``avx512_bf16``/``amx_bf16``, ARM ``bf16``; CUDA's own check) *and*
  a one-second probe of a teacher-shaped forward + backward measures it faster than fp32.
* :class:`CompiledDecodeStep` — :meth:`gptf.model.GPT.decode_step` under ``torch.compile``
  (inductor), shapes that do not grow, so two graphs (one token; a token and its guesses) serve
  every step of every answer. Compiling costs seconds (less on later runs: inductor keeps its work
  in an on-disk cache), so it is an option (``generation.compile``, ``--compile``) for processes that
  answer questions for a long time (``gptf chat``, ``gptf serve``), not a default.
* :func:`one_pytorch_thread` — for work split among Python worker threads (micro-batches side by
  side, many answers side by side): each worker computes with one PyTorch thread.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F

from gptf.model import KVCache

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86; ARM calls it "bf16"


@contextlib.contextmanager
def one_pytorch_thread() -> Iterator[int]:
    """PyTorch computes with one thread until the block ends, then with as many as before; yields
    how many that was (the number of cores the caller's worker threads may use)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def usable_cores() -> int:
    """The CPU cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the OS reports them (empty where it does not)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes in bf16 natively, and the evidence."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "torch.cuda.is_bf16_supported()" + ("" if ok else " is False")
    if device.type != "cpu":
        return False, f"no bf16 check for {device.type}"
    flags = cpu_flags()
    found = [f for f in (*NATIVE_BF16_FLAGS, "bf16") if f in flags]
    if found:
        return True, "CPU flags " + "+".join(found)
    return False, "the CPU has no native bf16 (no avx512_bf16/amx_bf16 flag): bf16 would be emulated, slower"


@attrs.frozen
class PrecisionChoice:
    precision: str  # "fp32" or "bf16"
    reason: str  # one line for the banner and run.json
    fp32_ms: float | None = None
    bf16_ms: float | None = None

    def as_record(self) -> dict:
        return attrs.asdict(self)


def probe_bf16(
    n_embd: int, seq_len: int, batch: int, device: torch.device, seconds: float = 1.0
) -> tuple[float, float]:
    """Median ms of a teacher-shaped block's forward + backward in fp32 and under bf16 autocast
    (two linear layers of a Transformer MLP and a qkv projection), interleaved."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(min(batch, 4) * seq_len, n_embd, generator=gen).to(device)  # <= 4 rows: a short probe
    w1 = (torch.randn(4 * n_embd, n_embd, generator=gen) * 0.02).to(device).requires_grad_()
    w2 = (torch.randn(n_embd, 4 * n_embd, generator=gen) * 0.02).to(device).requires_grad_()
    w3 = (torch.randn(3 * n_embd, n_embd, generator=gen) * 0.02).to(device).requires_grad_()

    def once(bf16: bool) -> float:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        started = time.perf_counter()
        with ctx:
            y = F.linear(F.silu(F.linear(x, w1)), w2) + F.linear(x, w3)[:, :n_embd]
        y.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):  # warm-up: kernels, allocations
        once(bf16)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times[True]) < 2:
        for bf16 in (False, True):
            times[bf16].append(once(bf16))
    median = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    return median[False], median[True]


def choose_precision(
    requested: str, device: torch.device, *, n_embd: int = 256, seq_len: int = 128, batch: int = 16
) -> PrecisionChoice:
    """``training.precision`` as it will run: fp32/bf16 as asked, or ``auto`` decided here."""
    if requested != "auto":
        return PrecisionChoice(requested, "as the recipe asks")
    native, evidence = native_bf16(device)
    if not native:
        return PrecisionChoice("fp32", f"auto: {evidence}")
    fp32_ms, bf16_ms = probe_bf16(n_embd, seq_len, batch, device)
    speed = f"probe fp32 {fp32_ms:.1f} ms vs bf16 {bf16_ms:.1f} ms"
    if bf16_ms < 0.95 * fp32_ms:
        return PrecisionChoice("bf16", f"auto: {evidence}; {speed} ({fp32_ms / bf16_ms:.2f}x)", fp32_ms, bf16_ms)
    return PrecisionChoice("fp32", f"auto: {evidence}, but {speed}: not faster", fp32_ms, bf16_ms)


# ------------------------------------------------------------------ compiled decoding


def compile_cache_dir() -> str:
    """Where inductor keeps compiled code between runs (its own default, or TORCHINDUCTOR_CACHE_DIR)."""
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")


class CompiledDecodeStep:
    """``model.decode_step`` compiled, and called for every step after the prompt.

    ``decode_step`` reads and writes the whole preallocated cache (the unfilled slots masked), so
    its shapes do not grow with the answer and no graph is recompiled as answers get longer. Per
    batch size, two graphs: one for a single new token (the plain loop), one for a token and any
    number of guesses after it (draft and verify; the number of tokens is a dynamic dimension).
    The first call of each compiles: ``compile_s`` adds up how long that took."""

    MAX_BATCH_SIZES = 4  # each batch size has graphs of its own (seconds to compile): beyond these, eager
    # Graphs of one function that PyTorch keeps (its default, 8, counts every model of the process: a
    # notebook or a test session with a few models and their 2-3 graphs each reaches it)
    RECOMPILE_LIMIT = 64

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.compile_s = 0.0
        self.graphs: set[tuple[int, bool]] = set()  # (batch size, several tokens) compiled so far
        self.eager = False  # True once compiling failed: decode_step runs uncompiled (same numbers)
        import torch._dynamo  # (the compiler's settings; torch.compile below imports it anyway)

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, self.RECOMPILE_LIMIT)
        step = getattr(model, "decode_step", model)
        # cpp_wrapper: the code that calls the kernels is C++ too, not Python (60 val answers by draft
        # and verify, side by side in one process: 2215 vs 2066 tokens/s; compiling cold ~18 s vs ~8 s)
        self._fn = torch.compile(step, fullgraph=True, options={"cpp_wrapper": True})

    @property
    def compiled_batches(self) -> set[int]:
        """The batch sizes with a graph so far."""
        return {batch for batch, _ in self.graphs}

    def accepts(self, batch: int) -> bool:
        batches = self.compiled_batches
        return batch in batches or len(batches) < self.MAX_BATCH_SIZES

    def after_cache(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """What ``model(ids, cache)`` does, through the compiled step: the logits (B, T, V) of ``ids``
        at the positions after the cached ones, their keys and values stored, the cache advanced."""
        positions = torch.arange(cache.length, cache.length + ids.size(1), device=ids.device)
        logits = self(ids, positions, cache.layer_keys, cache.layer_values)
        cache.advance(ids.size(1))
        return logits

    def __call__(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        keys: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """``model.decode_step(ids, positions, keys, values)``: logits (B, T, V)."""
        if self.eager:
            return self.model.decode_step(ids, positions, keys, values)
        graph = (ids.size(0), ids.size(1) > 1)
        if graph[1]:  # one graph for any number of guesses, not one per number
            most = keys[0].size(-2)  # (both bounds given: PyTorch 2.13 fails on a range open at the top)
            torch._dynamo.mark_dynamic(ids, 1, min=2, max=most)
            torch._dynamo.mark_dynamic(positions, 0, min=2, max=most)
        started = time.perf_counter()
        try:
            out = self._fn(ids, positions, keys, values)
        except (torch._dynamo.exc.FailOnRecompileLimitHit, torch._dynamo.exc.BackendCompilerFailed) as error:
            # too many graphs in this process, or no graph could be built (e.g. no C++ compiler on this
            # computer): the same step, uncompiled
            reason = str(getattr(error, "inner_exception", error)).strip().splitlines()[0]
            warnings.warn(f"decoding uncompiled from now on: {reason}", RuntimeWarning, stacklevel=2)
            self.eager = True
            return self.model.decode_step(ids, positions, keys, values)
        if graph not in self.graphs:  # its first call: compiled it
            self.compile_s += time.perf_counter() - started
            self.graphs.add(graph)
        return out
