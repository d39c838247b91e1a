"""The Python API (gptf.api) does what the command line does."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_RECIPE

import gptf.api as gptf
from gptf.errors import RecipeError


def test_train_writes_the_same_run_folder_as_gptf_run(workdir: Path) -> None:
    result = gptf.train(TINY_RECIPE, f"output_dir={workdir / 'run'}", "training.max_steps=4", quiet=True)
    assert result.run_dir == workdir / "run"
    for name in ("model.safetensors", "recipe.yaml", "tokenizer.json", "run.json", "metrics.jsonl"):
        assert (result.run_dir / name).is_file()
    assert result.train_loss is not None and result.val_loss is not None


def test_bad_overrides_raise_the_cli_error(workdir: Path) -> None:
    with pytest.raises(RecipeError, match=r"model\.nrom"):
        gptf.load(TINY_RECIPE, "model.nrom=layernorm")


def test_ask_matches_the_generator_and_ask_many_matches_ask(tiny_run: Path) -> None:
    model = gptf.open_run(tiny_run)
    prompts = ["什么是注意力机制？", "你好", "什么是注意力机制？"]
    one_by_one = [model.ask(p, temperature=0.0) for p in prompts]
    assert model.ask_many(prompts) == one_by_one
    generation = model.generate(prompts[0], temperature=0.0)
    assert generation.text == one_by_one[0]
    assert all(0.0 <= t.probability <= 1.0 for t in generation.tokens)


def test_score_loss_curves_and_attention(tiny_run: Path) -> None:
    model = gptf.open_run(tiny_run)
    scores = model.score([tiny_run.parent / "tiny_val.jsonl"])
    (report,) = scores.values()
    assert report.evaluated == report.total > 0
    curves = model.loss_curves()
    assert curves.train and curves.val
    maps = model.attention("你好")
    assert len(maps.weights) == model.recipe.model.n_layer


def test_ablate_returns_the_table(workdir: Path) -> None:
    summary = gptf.ablate(TINY_RECIPE, {"model.positional": ["rope", "none"]}, steps=2, out=workdir / "abl", quiet=True)
    assert [row["variant"] for row in summary["variants"]] == ["positional=rope", "positional=none"]
