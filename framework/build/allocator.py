"""Keep freed memory for the next training step instead of handing it back to the operating system.

Every training step allocates the same activations and gradients (a few MB each) and frees them
again. glibc's ``malloc`` (Linux) serves a block of more than 128 KB with a fresh ``mmap`` and
gives it back with ``munmap`` when it is freed, and it shrinks its heap whenever more than 128 KB
is free at the top. So each step the operating system hands over the same memory again, one 4 KB
page at a time: a *page fault* per page, and the kernel fills every page with zeros first.

:func:`keep_freed_memory` raises both limits with ``mallopt`` (glibc's documented knob, the same
as the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables, but callable
after start-up): freed blocks stay in the heap and the next step reuses them. Nothing changes in
the numbers computed, and the peak memory stays the same (the heap holds what the step needs
anyway). Measured with the teacher recipe, 40 steps, 2-core Zen 4: page faults 386,000 -> 122,000,
peak RSS 572 -> 574 MB, 139 -> 124 ms per step (mean of 5 runs each, alternating; the machine's own
speed varied by 25% meanwhile). It also caps glibc's heaps at one (``M_ARENA_MAX``): glibc gives a
thread that finds the heap busy a heap of its own, which keeps its own free memory; with the
micro-batches computed side by side (gptf.train.side_by_side) the training peak was 612 MB with a
heap per thread and 590-592 MB with one (``python benchmarks/train_memory.py --variants gptf``).
PyTorch's CPU tuning guides reach the same with jemalloc or
tcmalloc through ``LD_PRELOAD``; this needs no extra library and no restart.

Other C libraries (macOS, Windows, musl) have no such knob or behave otherwise: left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h: free memory at the top of the heap kept up to this
M_MMAP_THRESHOLD = -3  # blocks from this size on get an mmap of their own (freed with munmap)
M_ARENA_MAX = -8  # how many heaps ("arenas") threads may spread over
KEEP_BYTES = 1 << 30  # 1 GiB: far above what one step of the recipes here allocates

_done: str | None = None


def keep_freed_memory() -> str:
    """Ask glibc to keep freed memory for reuse (once per process); say what was done."""
    global _done
    if _done is None:
        _done = _tune_glibc()
    return _done


def _tune_glibc() -> str:
    if not sys.platform.startswith("linux"):
        return f"the C library's default ({sys.platform})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return "the C library's default (not glibc)"
    version.restype = ctypes.c_char_p
    accepted = mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    # At most one heap: the threads that compute micro-batches side by side (gptf.train.side_by_side)
    # would otherwise each get a heap of their own, each keeping its own freed memory (~20 MB more)
    accepted = accepted and mallopt(M_ARENA_MAX, 1) == 1
    if not accepted:
        return "the C library's default (glibc refused the limits)"
    return f"glibc {version().decode()} keeps freed blocks for reuse (fewer page faults)"
