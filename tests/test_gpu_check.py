"""benchmarks/gpu_check.py runs without a GPU too: its parts are exercised here on the CPU with
the tiny recipe, so the script the GPU machine runs is not first tried there."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from conftest import ROOT, TINY_RECIPE

sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check


def test_memory_step_runs_and_estimates(workdir: Path) -> None:
    result = gpu_check.memory_step(TINY_RECIPE, "cpu", 2, 16, bf16=False, checkpointing=True)
    assert result["estimate_MiB"] >= 0 and result["loss"] > 0
    assert "measured_MiB" not in result  # only a GPU has an allocator to ask


def test_end_to_end_runs_gptf(workdir: Path) -> None:
    result = gpu_check.end_to_end(steps=2, recipe=TINY_RECIPE, cwd=workdir, device="cpu")
    assert result["exit_code"] == 0, result["tail"]
    assert result["final_train_loss"] > 0 and result["val_char_f1"] is not None


def test_cuda_parts_say_they_were_skipped() -> None:
    if torch.cuda.is_available():
        return
    assert gpu_check.memory_26m() == {"note": gpu_check.NO_GPU}
    assert gpu_check.end_to_end() == {"note": gpu_check.NO_GPU}
    assert "needs 2" in gpu_check.ddp_nccl()["note"]
