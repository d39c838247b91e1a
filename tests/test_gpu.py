"""The GPU path: these tests run only where a CUDA GPU is present and skip cleanly elsewhere
(CI has none). ``python benchmarks/gpu_check.py`` measures the same things and prints JSON."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_RECIPE, copy_tiny_data, run_gptf
from safetensors.torch import load_file

sys.path.insert(0, str(ROOT / "benchmarks"))

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs two CUDA GPUs")


@cuda
def test_teacher_loss_curve_on_cuda_matches_the_cpu() -> None:
    from gpu_check import loss_curves

    curves = loss_curves(steps=15)
    assert curves["max_abs_difference"] < 1e-3, curves


@cuda
def test_26m_recipe_trains_fast_in_bf16() -> None:
    from gpu_check import GPT_26M, speed, trainer_for

    trainer = trainer_for(GPT_26M, "cuda", ["training.precision=auto"])
    assert trainer.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    measured = speed(trainer, warmup=3, steps=10)
    print(f"gpt_26m on {torch.cuda.get_device_name()}: {measured}")
    assert measured["tokens_per_s"] > 10_000  # a CPU core manages ~1,000
    assert measured["loss"] < 8.0  # it learns: ln(2048) = 7.6 at the start


@cuda
def test_activation_checkpointing_gives_the_same_gradients_on_cuda() -> None:
    from gptf.build.components import build_model, registry_for
    from gptf.recipe import load_recipe

    loaded = load_recipe(TINY_RECIPE)
    torch.manual_seed(0)
    model = build_model(loaded.recipe, registry_for(loaded), 300).cuda()
    x = torch.randint(0, 300, (3, 20), device="cuda")
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.checkpoint_blocks = checkpointing
        torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


@cuda
def test_gptf_run_end_to_end_on_cuda(tmp_path: Path) -> None:
    copy_tiny_data(tmp_path)
    result = run_gptf(["run", str(TINY_RECIPE), "--device", "cuda", "training.precision=auto"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    weights = load_file(tmp_path / "checkpoints" / "tiny" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


@cuda
def test_interrupt_and_resume_on_cuda(tmp_path: Path) -> None:
    """A checkpoint saved from the GPU (weights, fused AdamW state, CUDA random state) resumes on it."""
    from test_resume import make_run_folder, run_dir

    def run(folder: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "gptf", "run", "r.yaml", "--device", "cuda", *extra]
        environment = {**os.environ, "PYTHONIOENCODING": "utf-8", **env}
        return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, env=environment)

    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    make_run_folder(reference)
    make_run_folder(interrupted)
    assert run(reference).returncode == 0
    stopped = run(interrupted, GPTF_TEST_SIGNAL_AT="5:SIGINT")
    assert stopped.returncode == 130, stopped.stderr
    resumed = run(interrupted, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = load_file(run_dir(reference) / "model.safetensors")
    b = load_file(run_dir(interrupted) / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5  # GPU kernels may not be bit-exact


@two_gpus
def test_ddp_over_nccl_matches_one_gpu(tmp_path: Path) -> None:
    copy_tiny_data(tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gptf"]
    for name, command in (("one", [sys.executable, "-m", "gptf"]), ("two", torchrun)):
        args = ["run", str(TINY_RECIPE), f"output_dir={name}", "--device", "cuda"]
        done = subprocess.run(command + args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
