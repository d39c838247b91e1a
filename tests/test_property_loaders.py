"""Property tests: whatever a student types, the loaders answer with a GptfError, never a crash.

Hypothesis generates recipes (valid keys mixed with typos and wrong types), ``KEY=VALUE``
overrides and JSONL lines, and throws them at the loaders. The only exceptions allowed
out are :class:`gptf.errors.GptfError` subclasses, whose messages the CLI prints without
a traceback.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_RECIPE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptf.build.components import component_problems, open_registry
from gptf.build.registry import Registry
from gptf.build.validate import build_problems
from gptf.data import read_jsonl
from gptf.errors import DataError, GptfError, RecipeError
from gptf.recipe import Recipe, apply_override, load_recipe, parse_override, recipe_to_dict, structure_recipe

FAST = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

KNOWN_KEYS = [
    "name",
    "plugins",
    "output_dir",
    "tokenizer",
    "data",
    "model",
    "training",
    "quantizer",
    "generation",
    "demo_prompts",
    "extends",
    "n_layer",
    "n_head",
    "n_embd",
    "seq_len",
    "lr",
    "max_steps",
    "batch_size",
    "micro_batch",
    "positional",
    "norm",
    "eps",
    "path",
    "train",
    "val",
    "precision",
    "threads",
    "callbacks",
    "constraints",
    "top_p",
    "dropout",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["rope", "rmsnorm", "fp32", "bf16", "adamw", "data/x.jsonl", ""]),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=12,
)
recipe_dicts = st.dictionaries(keys, values, max_size=8)


def valid_base() -> dict[str, Any]:
    return recipe_to_dict(Recipe(name="prop"))


@FAST
@given(recipe_dicts)
def test_structure_recipe_only_raises_recipe_errors(data: dict[Any, Any]) -> None:
    try:
        structure_recipe(data, "generated.yaml")
    except RecipeError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@FAST
@given(st.lists(st.tuples(st.sampled_from(["model", "training", "data", "generation", "tokenizer"]), keys, values)))
def test_mutated_valid_recipe_only_raises_recipe_errors(mutations: list[tuple[str, Any, Any]]) -> None:
    data = valid_base()
    for section, key, value in mutations:
        data[section][key] = value
    with contextlib.suppress(RecipeError):
        structure_recipe(data, "generated.yaml")


override_text = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(
            ["model.n_layer", "model.norm", "model.norm.eps", "training", "training.lr.x", "a..b", "", ".", "name"]
        ),
        st.one_of(
            st.text(max_size=15), st.sampled_from(["[1", "{a: 1}", "!!python/object:os.system", "&a [*a]", "- -"])
        ),
    ),
)


@FAST
@given(st.lists(override_text, max_size=4))
def test_overrides_only_raise_recipe_errors(texts: list[str]) -> None:
    data = valid_base()
    for text in texts:
        try:
            path, value = parse_override(text)
            data = apply_override(data, path, value)
        except RecipeError:
            continue
    with contextlib.suppress(RecipeError):
        structure_recipe(data, "command line")


yaml_texts = st.one_of(
    st.text(max_size=80),
    recipe_dicts.map(lambda d: yaml.safe_dump({str(k): v for k, v in d.items()}, allow_unicode=True)),
    st.sampled_from(["extends: missing.yaml\n", "extends: [1]\n", "a: 1\na: 2\n", "- 1\n", ":\n", "\x00", "\t\ta:"]),
)


@FAST
@given(yaml_texts, st.lists(override_text, max_size=2))
def test_load_recipe_only_raises_gptf_errors(tmp_path: Path, text: str, overrides: list[str]) -> None:
    path = tmp_path / "generated.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_recipe(path, overrides)
    except GptfError as exc:
        assert str(exc)


def test_tiny_recipe_with_every_generated_override_kind_still_loads() -> None:
    """Sanity check that the strategies can produce recipes that load (the test can pass for real)."""
    assert load_recipe(TINY_RECIPE, ["model.norm.eps=1.0e-5", "training.lr=1e-3"]).recipe.training.lr == 1e-3


def json_value(draw_value: Any) -> str:
    try:
        return json.dumps(draw_value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        return "null"


jsonl_lines = st.one_of(
    st.text(max_size=40),
    st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.one_of(st.text(max_size=20), scalars),
            "completion": st.one_of(st.text(max_size=20), scalars),
            "concept": scalars,
        },
    ).map(json_value),
    values.map(json_value),
    st.sampled_from(
        ["\ufeff{}", '{"prompt": "a\u2028b", "completion": "c"}', '{"prompt": "\\ud800", "completion": "x"}']
    ),
)


@FAST
@given(st.lists(jsonl_lines, max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_read_jsonl_only_raises_data_errors(tmp_path: Path, lines: list[str], newline: str) -> None:
    path = tmp_path / "generated.jsonl"
    path.write_bytes(newline.join(lines).encode("utf-8", errors="surrogatepass"))
    try:
        samples = read_jsonl(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    for sample in samples:
        assert isinstance(sample.prompt, str) and sample.prompt.strip()
        assert isinstance(sample.completion, str) and sample.completion.strip()
        assert sample.source.startswith(f"{path}:")


good_text = st.text(min_size=1, max_size=20).filter(lambda t: t.strip() != "")


@FAST
@given(st.lists(st.tuples(good_text, good_text), min_size=1, max_size=5), st.booleans())
def test_read_jsonl_reads_back_every_valid_line(tmp_path: Path, pairs: list[tuple[str, str]], ascii_only: bool) -> None:
    """Valid lines are read back exactly, whatever characters they hold (U+2028, \\x85, ...)."""
    path = tmp_path / "valid.jsonl"
    lines = [json.dumps({"prompt": p, "completion": c}, ensure_ascii=ascii_only) for p, c in pairs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    samples = read_jsonl(path)
    assert [(s.prompt, s.completion) for s in samples] == pairs
    assert [s.source for s in samples] == [f"{path}:{i}" for i in range(1, len(pairs) + 1)]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return open_registry()


SLOTS = ["model.positional", "model.norm", "model.attention", "model.mlp", "training.optimizer", "training.scheduler"]
NAMES = ["rope", "learned", "none", "rmsnorm", "layernorm", "sdpa", "explicit", "silu", "adamw", "warmup_cosine"]
PARAMS = ["eps", "base", "betas", "warmup_ratio", "warmup_steps", "min_lr_ratio", "dim", "x"]


@FAST
@given(
    st.sampled_from(SLOTS),
    st.one_of(st.sampled_from(NAMES), st.text(max_size=8)),
    st.dictionaries(st.sampled_from(PARAMS), values, max_size=3),
)
def test_component_choices_only_give_problem_lines(registry: Registry, slot: str, name: str, params: dict) -> None:
    """Phase two (plugins loaded): any component name and parameters give problem lines, never a crash."""
    data = valid_base()
    section, key = slot.split(".")
    data[section][key] = {"name": name, **params}
    try:
        recipe = structure_recipe(data, "generated.yaml")
    except RecipeError:
        return
    problems = component_problems(recipe, registry) or build_problems(recipe, registry)
    assert all(isinstance(p, str) and p for p in problems)
