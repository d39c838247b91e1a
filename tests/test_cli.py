"""End to end through the command line, as a student would use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_RECIPE, invoke, run_gptf


def test_run_then_generate_fp32_and_int8(workdir: Path) -> None:
    result = run_gptf(["run", str(TINY_RECIPE)], workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "recipe chain: tiny.yaml -> teacher_3m.yaml" in out
    assert "parameters:" in out and "summary" in out and "demo answers" in out
    # the teacher's weighted answer start is said, so a train loss above the val loss is no surprise
    assert "loss: first 3 answer tokens x3 (the train loss is that weighted mean" in out
    run_dir = workdir / "checkpoints" / "tiny"
    for name in (
        "recipe.yaml",
        "tokenizer.json",
        "model.safetensors",
        "model.int8.safetensors",
        "metrics.jsonl",
        "run.json",
    ):
        assert (run_dir / name).is_file(), name

    args = ["generate", "--ckpt", str(run_dir), "--prompt", "什么是注意力机制？", "--temperature", "0"]
    first = run_gptf(args, workdir)
    second = run_gptf(args, workdir)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # greedy is deterministic
    labelled = run_gptf([*args, "--show-label", "--quantized"], workdir)
    assert labelled.returncode == 0, labelled.stderr
    assert labelled.stdout.startswith("回答:")


def test_generate_with_sampling_options(tiny_run: Path, tmp_path: Path) -> None:
    args = ["generate", "--ckpt", str(tiny_run), "--prompt", "你是谁？", "--temperature", "0.8", "--top-k", "20"]
    args += ["--top-p", "0.9", "--repetition-penalty", "1.2", "--max-new-tokens", "8", "--stop", "。", "--seed", "3"]
    a = run_gptf(args, tmp_path)
    b = run_gptf(args, tmp_path)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout  # same seed, same sample


def test_generate_threads_option(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    calls: list[int] = []
    base = ["generate", "--ckpt", str(tiny_run), "--prompt", "你是谁？", "--max-new-tokens", "4"]
    assert invoke(base).exit_code == 0 and calls == [1]  # one thread by default, as chat and eval
    assert invoke([*base, "--threads", "2"]).exit_code == 0 and calls == [1, 2]
    result = invoke([*base, "--threads", "0"])
    assert result.exit_code != 0 and "--threads" in result.output
    assert torch.get_num_threads() == before


def test_generate_no_constraints_is_plain_greedy(tiny_run: Path) -> None:
    from gptf.generate import Generator
    from gptf.run import load_run, sampling_settings

    run = load_run(tiny_run)
    assert run.generator().constraints  # the tiny recipe has the teacher's four
    assert run.generator(recipe_constraints=False).constraints == []
    assert len(run.generator(recipe_constraints=False, stops=["。"]).constraints) == 1  # asked for: kept
    plain = Generator(run.model, run.tokenizer, []).generate("什么是注意力机制？", sampling_settings(run.recipe))
    args = ["generate", "--ckpt", str(tiny_run), "--prompt", "什么是注意力机制？", "--temperature", "0"]
    result = invoke([*args, "--no-constraints"])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip("\n") == plain.text


def test_inspect_prints_reference_count(tmp_path: Path) -> None:
    from conftest import ROOT

    result = run_gptf(["inspect", str(ROOT / "recipes" / "teacher_3m.yaml")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "parameters: 3,368,192" in result.stdout
    assert "V·d + L·(12d² + 11d) + d" in result.stdout


def test_errors_are_one_message_without_traceback(tmp_path: Path) -> None:
    from conftest import ROOT

    result = run_gptf(["run", str(ROOT / "recipes" / "teacher_3m.yaml"), "model.attention=flash"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown attention 'flash'" in result.stderr and "valid choices: " in result.stderr
    debug = run_gptf(["--debug", "run", str(ROOT / "recipes" / "teacher_3m.yaml"), "model.attention=flash"], tmp_path)
    assert "Traceback" in debug.stderr
