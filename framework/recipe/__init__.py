"""Recipes: YAML files that compose components into a model and a training run.

    recipe.yaml ─▶ yaml_file (safe YAML) ─▶ compose (extends, KEY=VALUE) ─▶ structure (types,
    shapes, all problems at once) ─▶ schema.Recipe (frozen, typed)

Phase two of validation needs the plugins and lives in :mod:`gptf.build.validate`.
"""

from gptf.recipe.compose import apply_override, deep_merge, load_recipe, parse_override, resolve_chain
from gptf.recipe.schema import (
    ComponentSpec,
    DataConfig,
    GenerationConfig,
    LoadedRecipe,
    ModelConfig,
    Recipe,
    TokenizerConfig,
    TrainingConfig,
)
from gptf.recipe.structure import check_shapes, recipe_from_dict, recipe_to_dict, structure_recipe
from gptf.recipe.yaml_file import parse_yaml, read_recipe_file

__all__ = [
    "ComponentSpec",
    "DataConfig",
    "GenerationConfig",
    "LoadedRecipe",
    "ModelConfig",
    "Recipe",
    "TokenizerConfig",
    "TrainingConfig",
    "apply_override",
    "check_shapes",
    "deep_merge",
    "load_recipe",
    "parse_override",
    "parse_yaml",
    "read_recipe_file",
    "recipe_from_dict",
    "recipe_to_dict",
    "resolve_chain",
    "structure_recipe",
]
