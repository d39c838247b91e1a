"""Shared fixtures: a tiny recipe that trains in about a second, and helpers to run the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TINY_RECIPE = FIXTURES / "tiny.yaml"
PEER = ROOT.parent / "shared" / "peer" / "gpt_teacher_seed"
#: A complete student plugin (a ScaleNorm), the one docs/plugins.md walks through.
SCALE_NORM = (ROOT / "examples" / "plugins" / "scalenorm.py").read_text(encoding="utf-8")


def copy_tiny_data(folder: Path) -> None:
    for name in ("tiny_train.jsonl", "tiny_val.jsonl"):
        shutil.copy(FIXTURES / name, folder / name)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder with the tiny data, made the current directory."""
    copy_tiny_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run directory (trained once per test session)."""
    from rich.console import Console

    from gptf.recipe import load_recipe
    from gptf.run import run_recipe

    folder = tmp_path_factory.mktemp("tiny_run")
    copy_tiny_data(folder)
    loaded = load_recipe(TINY_RECIPE, [f"output_dir={folder / 'run'}", f"tokenizer.path={folder / 'tok.json'}"])
    import os

    old = Path.cwd()
    os.chdir(folder)
    try:
        run_recipe(loaded, Console(file=open(os.devnull, "w")))  # noqa: SIM115
    finally:
        os.chdir(old)
    return folder / "run"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def invoke(args: list[str]) -> object:
    """Run the CLI in-process; returns the click Result (exit_code, stdout, stderr)."""
    from gptf.cli import app

    return CliRunner().invoke(app, args)


def run_gptf(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``gptf`` as a real process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "gptf", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "160"},
    )


@pytest.fixture(scope="module")
def torch_one_thread() -> object:
    """Tiny tensors: one thread is fastest, and it keeps the shared test machine free
    (a module asks for it with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
