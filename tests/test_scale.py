"""Bigger recipes and what they cost: recipes/scale/, FLOPs per token, training memory,
activation checkpointing and ``training.precision: auto``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TINY_RECIPE, invoke

from gptf.build.components import build_model, count_parameters, reference_parameter_count, registry_for
from gptf.build.costs import flops_per_token, matmul_parameters, training_memory
from gptf.build.speed import choose_precision
from gptf.recipe import load_recipe

SCALE = {"gpt_26m": (26_259_968, 2048, 512, 8), "gpt_100m": (100_782_336, 2048, 768, 14)}


@pytest.mark.parametrize("name", SCALE)
def test_scale_recipes_have_the_stated_size_and_their_own_tokenizer(name: str) -> None:
    parameters, vocab, width, layers = SCALE[name]
    loaded = load_recipe(ROOT / "recipes" / "scale" / f"{name}.yaml")
    recipe = loaded.recipe
    assert recipe.tokenizer.path == f"tokenizer/{name}.json"  # never the teacher's tokenizer file
    assert (recipe.tokenizer.vocab_size, recipe.model.n_embd, recipe.model.n_layer) == (vocab, width, layers)
    assert recipe.model.seq_len == 512 and recipe.training.precision == "auto"
    assert reference_parameter_count(vocab, width, layers) == parameters
    with torch.device("meta"):  # shapes only: no memory, no time
        assert count_parameters(build_model(recipe, registry_for(loaded), vocab)) == parameters


def test_inspect_shows_flops_and_memory() -> None:
    result = invoke(["inspect", str(ROOT / "recipes" / "scale" / "gpt_26m.yaml")])
    assert result.exit_code == 0, result.output
    assert "parameters: 26,259,968" in result.stdout
    assert "training  ≈ 6N + 12·L·T·d" in result.stdout and "inference ≈ 2N + 4·L·T·d" in result.stdout
    assert "training memory per micro-batch (16 x 512 tokens, fp32)" in result.stdout
    assert "bf16 autocast" in result.stdout  # precision: auto shows both


def teacher_model() -> torch.nn.Module:
    loaded = load_recipe(ROOT / "recipes" / "teacher_3m.yaml")
    with torch.device("meta"):
        return build_model(loaded.recipe, registry_for(loaded), 824)


def test_flops_per_token_of_the_teacher() -> None:
    model = teacher_model()
    n = matmul_parameters(model)
    assert n == 3_368_192  # tied embeddings: the table is the output layer, counted once
    flops = flops_per_token(model)
    assert flops.attention_per_token == 4 * 4 * 128 * 256
    assert flops.training == 6 * n + 12 * 4 * 128 * 256 == 3 * flops.forward


def test_untied_embeddings_do_not_count_the_lookup() -> None:
    loaded = load_recipe(ROOT / "recipes" / "teacher_3m.yaml", ["model.tie_embeddings=false"])
    with torch.device("meta"):
        model = build_model(loaded.recipe, registry_for(loaded), 824)
    assert matmul_parameters(model) == count_parameters(model) - 824 * 256


def test_training_memory_adds_up() -> None:
    model = teacher_model()
    mem = training_memory(model, rows=4, tokens=128)
    assert mem.weights == mem.gradients == 4 * 3_368_192 and mem.optimizer == 8 * 3_368_192
    per_token = 4 * (9 + 2 * 4) * 256 * 4 + 2 * 824 * 4  # 4 layers x 17d values, fp32; logits + softmax
    assert mem.activations == 4 * 128 * per_token
    assert mem.total == mem.weights + mem.gradients + mem.optimizer + mem.activations
    less = training_memory(model, rows=4, tokens=128, checkpointing=True)
    assert less.activations < mem.activations
    assert training_memory(model, rows=4, tokens=128, bf16=True).activations < mem.activations


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    loaded = load_recipe(TINY_RECIPE)
    torch.manual_seed(0)
    model = build_model(loaded.recipe, registry_for(loaded), 300)
    x = torch.randint(0, 300, (3, 20))

    def gradients(checkpointing: bool) -> list[torch.Tensor]:
        model.zero_grad()
        model.checkpoint_blocks = checkpointing
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
        return [p.grad.clone() for p in model.parameters()]

    for plain, recomputed in zip(gradients(False), gradients(True), strict=True):
        assert torch.equal(plain, recomputed)


def test_explicit_precisions_are_kept_as_asked() -> None:
    """``auto`` is decided by gptf.build.speed (tests/test_speed_choices.py fakes the flags and the probe)."""
    assert choose_precision("bf16", torch.device("cpu")).precision == "bf16"
    assert choose_precision("fp32", torch.device("cpu")).precision == "fp32"
