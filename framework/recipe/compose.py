"""From files to one plain dict: ``extends`` (deep merge) and ``KEY=VALUE`` overrides.

A recipe may ``extends:`` another (path relative to itself). Any value can be overridden
from the command line as ``KEY=VALUE`` (``model.norm=layernorm``), parsed as YAML. A
component given a different name replaces the old one whole, so no stale parameters survive.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from gptf.errors import RecipeError, clip, shown
from gptf.recipe.schema import LoadedRecipe
from gptf.recipe.structure import structure_recipe
from gptf.recipe.yaml_file import missing_recipe_hint, parse_yaml, read_recipe_file


def deep_merge(base: Any, override: Any, *, top: bool = True) -> Any:
    """Merge ``override`` into ``base`` (neither is modified).

    Mappings merge key by key. A component given by a different name replaces the old
    one entirely, so no stale parameters survive a swap (``rope`` -> ``learned``); named by
    the name it already has, it keeps its parameters (``gptf ablate --swap`` relies on this to
    compare the recipe's own component, as configured, with others). The recipe's own
    top-level ``name`` is not a component, so ``top`` exempts it.
    """
    if isinstance(base, str) and isinstance(override, dict) and "name" not in override:
        base = {"name": base}  # parameters for a component given by bare name
    if not top and isinstance(base, dict) and isinstance(override, str) and base.get("name") == override:
        return copy.deepcopy(base)  # the same component by bare name: keep its parameters
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    if not top and "name" in base and "name" in override and base["name"] != override["name"]:
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value, top=False) if key in merged else copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.norm=layernorm"`` -> (["model", "norm"], "layernorm"); value read as YAML."""
    shown_text = clip(text, 60)  # an override may be long: messages show its start
    if "=" not in text:
        raise RecipeError(
            "command line", [f"override '{shown_text}' must look like KEY=VALUE (e.g. training.max_steps=300)"]
        )
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not key.strip() or any(not p or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise RecipeError(
            "command line", [f"override '{shown_text}': '{clip(key, 60)}' is not a key path like model.n_layer"]
        )
    value = parse_yaml(raw, f"override '{shown_text}'") if raw.strip() else ""
    return parts, value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """Return ``data`` with ``value`` set at ``path`` (component rules as in :func:`deep_merge`)."""
    patch: Any = value
    for key in reversed(path):
        patch = {key: patch}
    node: Any = data
    for i, key in enumerate(path[:-1]):
        node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):  # model.norm.eps=... on a bare component name
            break
        if node is not None and not isinstance(node, dict):
            where = ".".join(path[: i + 1])
            raise RecipeError("command line", [f"{'.'.join(path)}: '{where}' is a value, not a section"])
    return deep_merge(data, patch)


def resolve_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """Read ``path`` and everything it ``extends``; return the merged dict and the chain."""
    path = path.resolve()
    if path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(str(path), [f"extends: cycle: {cycle}"])
    data = read_recipe_file(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, [path]
    if not isinstance(parent, str):
        raise RecipeError(str(path), [f"extends: expected a path to another recipe, got {shown(parent)}"])
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        hint = missing_recipe_hint(parent_path)
        raise RecipeError(str(path), [f"extends: file not found: {parent_path}" + (f" ({hint})" if hint else "")])
    base, chain = resolve_chain(parent_path, (*seen, path))
    merged = deep_merge(base, data)
    return merged, [path, *chain]


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read a recipe file, follow ``extends``, apply ``KEY=VALUE`` overrides, validate."""
    path = Path(path)
    data, chain = resolve_chain(path)
    data.setdefault("name", path.stem)
    problems: list[str] = []
    for text in overrides:  # every malformed override is reported, not just the first
        try:
            keys, value = parse_override(text)
            data = apply_override(data, keys, value)
        except RecipeError as exc:
            problems += [p if exc.source == "command line" else f"{exc.source}: {p}" for p in exc.problems]
    if problems:
        raise RecipeError("command line", problems)
    recipe = structure_recipe(data, str(path))
    return LoadedRecipe(recipe, chain, chain[0].parent, data, tuple(overrides))
