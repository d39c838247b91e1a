"""Every shipped recipe loads, validates and builds; the teacher has exactly 3,368,192 parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PEER, ROOT

from gptf.build.components import build_model, count_parameters, reference_parameter_count, registry_for
from gptf.errors import RecipeError
from gptf.recipe import load_recipe

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_builds(path: Path) -> None:
    loaded = load_recipe(path)
    registry = registry_for(loaded)
    model = build_model(loaded.recipe, registry, loaded.recipe.tokenizer.vocab_size)
    assert count_parameters(model) > 0


def test_teacher_parameter_count_matches_formula() -> None:
    loaded = load_recipe(ROOT / "recipes" / "teacher_3m.yaml")
    model = build_model(loaded.recipe, registry_for(loaded), 824)
    assert count_parameters(model) == 3_368_192 == reference_parameter_count(824, 256, 4)


def test_teacher_count_with_shipped_tokenizer() -> None:
    loaded = load_recipe(ROOT / "recipes" / "teacher_3m.yaml")
    path = ROOT / loaded.recipe.tokenizer.path
    if not path.is_file():
        pytest.skip("the teacher tokenizer has not been built yet")
    from gptf.build.components import new_tokenizer

    registry = registry_for(loaded)
    tokenizer = new_tokenizer(loaded.recipe, registry)
    tokenizer.load(path)
    assert tokenizer.vocab_size == 824
    assert count_parameters(build_model(loaded.recipe, registry, tokenizer.vocab_size)) == 3_368_192


@pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer is not present")
def test_teacher_count_with_original_release_tokenizer() -> None:
    from gptf.build.components import new_tokenizer

    loaded = load_recipe(ROOT / "recipes" / "teacher_3m.yaml", [f"tokenizer.path={PEER / 'tokenizer.json'}"])
    registry = registry_for(loaded)
    tokenizer = new_tokenizer(loaded.recipe, registry)
    tokenizer.load(PEER / "tokenizer.json")
    assert tokenizer.vocab_size == 824
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id) == (0, 1, 2, 3)
    assert count_parameters(build_model(loaded.recipe, registry, tokenizer.vocab_size)) == 3_368_192


def test_override_swaps_exactly_one_component() -> None:
    base = load_recipe(ROOT / "recipes" / "teacher_3m.yaml").recipe
    swapped = load_recipe(ROOT / "recipes" / "teacher_3m.yaml", ["model.positional=learned"]).recipe
    assert swapped.model.positional.name == "learned"
    assert base.model.positional.name == "rope"
    assert swapped.model.norm == base.model.norm
    assert swapped.model.attention == base.model.attention
    assert swapped.training == base.training


def test_extends_swaps_exactly_one_component() -> None:
    base = load_recipe(ROOT / "recipes" / "teacher_3m.yaml")
    child = load_recipe(ROOT / "recipes" / "ablations" / "learned_positions.yaml")
    assert child.recipe.model.positional.name == "learned"
    assert child.chain[1] == base.chain[0]
    for field in ("norm", "attention", "mlp", "n_layer", "n_head", "n_embd", "seq_len"):
        assert getattr(child.recipe.model, field) == getattr(base.recipe.model, field)
    assert child.recipe.training == base.recipe.training
    assert child.recipe.data == base.recipe.data
    # the learned table adds seq_len * n_embd parameters, nothing else changes
    registry = registry_for(child)
    n_child = count_parameters(build_model(child.recipe, registry, 824))
    assert n_child == 3_368_192 + 128 * 256


def test_component_swap_resets_parameters() -> None:
    loaded = load_recipe(
        ROOT / "recipes" / "teacher_3m.yaml", ["model.positional={name: rope, base: 500.0}", "model.positional=learned"]
    )
    assert loaded.recipe.model.positional.params == {}


def test_naming_the_same_component_keeps_its_parameters() -> None:
    """``--swap training.scheduler=warmup_cosine,constant`` must compare the recipe's own schedule
    (warmup_ratio 0.05, min_lr_ratio 0.1), not warmup_cosine with its defaults."""
    teacher = ROOT / "recipes" / "teacher_3m.yaml"
    own = load_recipe(teacher).recipe.training.scheduler
    assert own.params == {"warmup_ratio": 0.05, "min_lr_ratio": 0.1}
    assert load_recipe(teacher, ["training.scheduler=warmup_cosine"]).recipe.training.scheduler == own
    other = load_recipe(teacher, ["training.scheduler=constant"]).recipe.training.scheduler
    assert other.name == "constant" and other.params == {}  # a different component still starts clean
    back = load_recipe(teacher, ["training.scheduler=constant", "training.scheduler=warmup_cosine"])
    assert back.recipe.training.scheduler.params == {}  # its parameters were dropped by the first swap


def test_component_parameter_override() -> None:
    loaded = load_recipe(ROOT / "recipes" / "teacher_3m.yaml", ["model.norm.eps=1e-5"])
    assert loaded.recipe.model.norm.name == "rmsnorm"
    assert loaded.recipe.model.norm.params == {"eps": 1e-5}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.norm=rmsnrm"], "did you mean 'rmsnorm'"),
        (["model.nlayer=3"], "model.nlayer: unknown key (did you mean 'n_layer'?)"),
        (["model.n_layer=four"], "model.n_layer: expected int"),
        (["model.n_embd=250"], "not divisible by model.n_head=4"),
        (["training.micro_batch=5"], "does not divide training.batch_size=16"),
        (["model.norm.epsilon=1"], "has no parameter 'epsilon' (did you mean 'eps'?)"),
        (["model.norm.eps=big"], "model.norm.eps: expected float"),
        (["training"], "must look like KEY=VALUE"),
    ],
)
def test_recipe_errors_name_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        loaded = load_recipe(ROOT / "recipes" / "teacher_3m.yaml", overrides)
        registry_for(loaded)
    assert expected in str(info.value)


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
