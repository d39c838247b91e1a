"""--device auto|cpu|cuda|mps: the choice, and clear errors for a device that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_RECIPE, copy_tiny_data, invoke, run_gptf

from gptf.build import devices
from gptf.build.devices import model_device, resolve_device
from gptf.errors import GptfError


@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch, no_accelerators: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert resolve_device("AUTO") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cuda", "no CUDA GPU is available here"),
        ("cuda:1", "no CUDA GPU is available here"),
        ("mps", "MPS backend is not available"),
        ("tpu", "unknown device 'tpu'; valid choices: auto, cpu, cuda, mps"),
    ],
)
def test_missing_devices_are_clear_errors(no_accelerators: None, name: str, message: str) -> None:
    with pytest.raises(GptfError, match=message) as error:
        resolve_device(name)
    if name != "tpu":
        assert "--device cpu" in str(error.value)


def test_int8_weights_stay_on_the_cpu(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gptf.run import load_run

    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    with pytest.raises(GptfError, match="int8 weights run on the CPU only"):
        load_run(tiny_run, quantized=True, device="cuda")
    run = load_run(tiny_run, quantized=True, device="auto")  # auto + int8: the CPU, even with a GPU
    assert model_device(run.model) == torch.device("cpu")


def test_model_and_generator_follow_the_device(tiny_run: Path) -> None:
    from gptf.run import load_run

    run = load_run(tiny_run, device="cpu")
    assert model_device(run.model) == torch.device("cpu") and run.generator().device == torch.device("cpu")
    assert model_device(torch.nn.Identity()) == torch.device("cpu")  # no parameters: the CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["run", "generate", "eval", "chat", "serve"])
def test_device_cuda_without_a_gpu_is_one_clear_message(
    command: str, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = {
        "run": ["run", str(TINY_RECIPE)],
        "generate": ["generate", "--ckpt", str(tiny_run), "--prompt", "你好"],
        "eval": ["eval", "--ckpt", str(tiny_run)],
        "chat": ["chat", "--ckpt", str(tiny_run)],
        "serve": ["serve", "--ckpt", str(tiny_run), "--port", "0"],
    }[command]
    copy_tiny_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = invoke([*args, "--device", "cuda"])  # in-process: the same CLI, without starting Python 5 times
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "--device cuda: no CUDA GPU is available here" in result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "checkpoints").exists()  # refused before any work


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_in_a_real_process(tiny_run: Path, tmp_path: Path) -> None:
    result = run_gptf(["generate", "--ckpt", str(tiny_run), "--prompt", "你好", "--device", "cuda"], tmp_path)
    assert result.returncode == 2
    assert "--device cuda: no CUDA GPU is available here" in result.stderr and "Traceback" not in result.stderr


def test_device_cpu_runs(tiny_run: Path, tmp_path: Path) -> None:
    result = run_gptf(["generate", "--ckpt", str(tiny_run), "--prompt", "你好", "--device", "cpu"], tmp_path)
    assert result.returncode == 0, result.stderr
