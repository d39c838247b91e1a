"""Reading recipe YAML safely: floats like ``1e-3``, no duplicate keys, errors with file:line,
and no "alias bomb": anchors and aliases (``&a`` / ``*a``) may repeat a value, but what they
expand to is counted, and a document that stands for more than :data:`MAX_VALUES` values (or
an alias inside itself) is refused before anything is built from it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gptf.errors import GptfError, RecipeError, closest_path, path_kind

#: Values (scalars, lists, mappings) a recipe may stand for once every alias is expanded. The
#: teacher recipe has about 150; a 0.5 KB "billion laughs" file stands for 10^9.
MAX_VALUES = 100_000


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float, refuses duplicate keys and alias bombs."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            check_expansion(node)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node, limit: int = MAX_VALUES) -> None:
    """Refuse a YAML node graph that expands to more than ``limit`` values, or that contains
    itself. Each node is visited once (aliases share nodes), so this is fast even for a bomb."""
    size: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            ancestors.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in _children(node))
            if size[key] > limit:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"aliases (*name) make this value stand for more than {limit:,} values; "
                    "write the values out, or repeat less",
                    node.start_mark,
                )
            continue
        if key in size:
            continue
        if key in ancestors:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias (*name) refers to a value that contains it", node.start_mark
            )
        ancestors.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


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


#: The recipes that come with gptf (beside the ``framework`` folder of a source checkout).
SHIPPED_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
_RECIPE_SUFFIXES = (".yaml", ".yml")
_NAMES_LISTED = 8  # the most recipe names a hint lists


def recipes_in(folder: Path) -> list[str]:
    """The recipe files of ``folder``, then its sub-folders that hold some (``ablations/``), sorted."""
    try:
        entries = sorted(folder.iterdir())
        files = [e.name for e in entries if _is_recipe_file(e)]
        folders = [f"{e.name}/" for e in entries if e.is_dir() and any(_recipe_files(e))]
    except OSError:
        return []
    return files + folders


def _is_recipe_file(path: Path) -> bool:
    return path.suffix in _RECIPE_SUFFIXES and path.is_file()


def _recipe_files(folder: Path) -> list[Path]:
    return [e for e in folder.iterdir() if _is_recipe_file(e)]


def missing_recipe_hint(path: Path) -> str | None:
    """Where the recipe may be, for a ``path`` that is not a recipe file: a file of a close name in its
    folder or one below (a typo, or ``recipes/`` left out), the recipes of that folder, or else the
    shipped ones (gptf started from another folder)."""
    folder = path if path.is_dir() else path.parent
    hints = []
    close = None if path.is_dir() else closest_path(path, _is_recipe_file, depth=1)
    if close is not None:
        hints.append(f"did you mean {close}?")
    names = recipes_in(folder) if folder.is_dir() else []
    if any(not name.endswith("/") for name in names) or (path.is_dir() and names):
        hints.append(f"recipes in {folder}: {_listed(names)}")
    elif (shipped := recipes_in(SHIPPED_RECIPES)) and folder != SHIPPED_RECIPES:
        cwd = Path.cwd()
        relative = f" (a relative path is read from the current folder, {cwd})" if path.is_relative_to(cwd) else ""
        hints.append(f"the shipped recipes are in {SHIPPED_RECIPES}: {_listed(shipped)}{relative}")
    return " ".join(hints) or None


def _listed(names: list[str]) -> str:
    return ", ".join(names[:_NAMES_LISTED]) + (", ..." if len(names) > _NAMES_LISTED else "")


def read_recipe_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        where = f"{path} is {path_kind(path)}, not a recipe file" if path.exists() else f"recipe not found: {path}"
        raise GptfError(where, hint=missing_recipe_hint(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GptfError(f"cannot read recipe {path}: {exc}") from exc
    data = parse_yaml(text, str(path))
    if data is None:  # an empty file, or only comments: almost always a mistake (it would train on defaults)
        raise RecipeError(
            str(path),
            [
                "the recipe is empty (no keys at all); start from a shipped recipe: copy "
                "recipes/teacher_3m.yaml, or write 'extends: <path to it>' and the keys you change"
            ],
        )
    if not isinstance(data, dict):
        raise RecipeError(str(path), [f"the top level must be a mapping of keys, got {type(data).__name__}"])
    return data
