"""Seeing inside: ``gptf tokenize`` and ``gptf attention`` on the tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_RECIPE, run_gptf
from rich.console import Console

from gptf.plots import plots_available

HAS_MATPLOTLIB = plots_available()


def test_tokenize_with_a_recipe_shows_tokens_ids_and_bytes(workdir: Path) -> None:
    result = run_gptf(["tokenize", "--recipe", str(TINY_RECIPE), "注意力机制"], workdir)
    assert result.returncode == 0, result.stderr
    from gptf.plugins.tokenization.byte_bpe import ByteLevelBPE

    tokenizer = ByteLevelBPE(300)
    tokenizer.load(workdir / "tokenizer.json")  # trained and saved by the command, as gptf run would
    for token_id in tokenizer.encode("注意力机制"):
        assert f" {token_id} " in result.stdout
        assert tokenizer.token_bytes(token_id).hex(" ")[:8] in result.stdout
    assert "5 characters ->" in result.stdout


def test_tokenize_a_run_as_the_model_sees_a_prompt(tiny_run: Path, tmp_path: Path) -> None:
    result = run_gptf(["tokenize", "--ckpt", str(tiny_run), "--as-prompt", "你是谁？"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "<bos>" in result.stdout and "用户" in result.stdout and "\\n" in result.stdout


@pytest.mark.parametrize("args", [[], ["--ckpt", "x", "--recipe", "y"]], ids=["neither", "both"])
def test_tokenize_needs_exactly_one_source(args: list[str], tmp_path: Path) -> None:
    result = run_gptf(["tokenize", *args, "你好"], tmp_path)
    assert result.returncode == 2 and "exactly one of --ckpt" in result.stderr and "Traceback" not in result.stderr


def test_token_labels_show_split_characters_as_bytes(tiny_run: Path) -> None:
    from gptf.run import load_run
    from gptf.tools.insight import token_rows, tokens_table

    tokenizer = load_run(tiny_run).tokenizer
    rare = "魑"  # not in the tiny training data: byte-level BPE spells it as bytes
    rows = token_rows(tokenizer, tokenizer.encode(rare))
    assert b"".join(r.raw for r in rows) == rare.encode("utf-8")
    assert all(r.text.startswith("\\x") for r in rows)
    _, summary = tokens_table(tokenizer, rare)
    assert "only part of a character" in summary


def test_explicit_twin_answers_like_the_trained_sdpa_model(tiny_run: Path) -> None:
    from gptf.run import load_run
    from gptf.tools.insight import explicit_twin

    run = load_run(tiny_run)
    assert run.recipe.model.attention.name == "sdpa"
    twin = explicit_twin(run)
    ids = torch.randint(0, run.tokenizer.vocab_size, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(twin(ids), run.model(ids), atol=1e-5, rtol=1e-5)


def test_attention_maps_are_causal_distributions(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    result = run_gptf(
        ["attention", "--ckpt", str(tiny_run), "--prompt", "什么是注意力机制？", "--out", str(out)], tmp_path
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "attention.json").read_text(encoding="utf-8"))
    assert data["tokens"][0] == "<bos>" and len(data["tokens"]) == len(data["ids"])
    weights = torch.tensor(data["layers"])  # (layers, heads, T, T)
    T = len(data["ids"])
    assert weights.shape == (2, 2, T, T)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, T), atol=1e-3, rtol=0)
    assert float(weights.triu(diagonal=1).abs().max()) == 0.0  # nobody looks at a later token
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == (["layer0.png", "layer1.png"] if HAS_MATPLOTLIB else [])
    assert "saved" in result.stdout


def test_attention_can_include_the_answer(tiny_run: Path, tmp_path: Path) -> None:
    from gptf.run import load_run
    from gptf.tools.insight import attention_maps, save_attention

    run = load_run(tiny_run)
    prompt_only = attention_maps(run, "你是谁？")
    with_answer = attention_maps(run, "你是谁？", with_answer=True)
    assert with_answer.answer is not None
    assert with_answer.ids[: len(prompt_only.ids)] == prompt_only.ids
    assert len(with_answer.ids) >= len(prompt_only.ids)
    saved = save_attention(with_answer, "你是谁？", tmp_path, Console(file=open(tmp_path / "log", "w")))  # noqa: SIM115
    assert saved[0].name == "attention.json"
