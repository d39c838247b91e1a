"""Reading recipe YAML safely: floats like ``1e-3``, no duplicate keys, errors with file:line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gptf.errors import GptfError, RecipeError


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float and refuses duplicate keys."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", mark)
        seen[key] = True
    return loader.construct_mapping(node)


_RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; errors name ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except RecursionError as exc:
        raise RecipeError(source, ["invalid YAML: nested too deeply"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(where, [f"invalid YAML: {problem}"]) from exc


def read_recipe_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GptfError(f"recipe not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GptfError(f"cannot read recipe {path}: {exc}") from exc
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(str(path), [f"the top level must be a mapping of keys, got {type(data).__name__}"])
    return data
