"""gptf.build.allocator: freed training memory is reused instead of being faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gptf.build.allocator import keep_freed_memory

# Allocates and frees a 4 MB tensor 20 times and counts the page faults, before and after the call.
PROBE = """
import resource, torch
from gptf.build.allocator import keep_freed_memory

def faults(n=20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        x = torch.ones(1 << 20)  # 4 MB: above glibc's default limit of 128 KB for a fresh mmap
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults(3)
plain = faults()
note = keep_freed_memory()
faults(3)
kept = faults()
print(plain, kept, note, sep="|")
"""


def test_it_says_what_it_did_and_does_it_once() -> None:
    first = keep_freed_memory()
    assert first and keep_freed_memory() is first


def test_freed_blocks_are_reused_without_page_faults() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    plain, kept, note = out.stdout.strip().split("|")
    if "glibc" not in note or "keeps" not in note:
        pytest.skip(f"nothing to tune here: {note}")
    # 20 x 4 MB handed over afresh: thousands of page faults (5,120 here); kept, the block is reused
    if int(plain) < 1_000:  # glibc raised its own (adaptive) mmap limit first: seen once in a full run
        pytest.skip(f"glibc already reused the block before the call ({plain} page faults): nothing to compare")
    assert int(kept) < int(plain) / 10, (plain, kept)
