"""Is this still the run that was trained? Checks made when a run directory is loaded.

``run.json`` records what a run was made with: the tokenizer's sha256 and size, which
plugin provided each component (and its file or version), the data files' hashes. When
``gptf generate`` loads the run again, these checks turn a silent mismatch (a replaced
tokenizer, an uninstalled plugin, weights from another model) into an error that says
exactly what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import SafetensorError

from gptf.builder import component_slots
from gptf.errors import CheckpointError
from gptf.interfaces import Tokenizer
from gptf.recipe import Recipe
from gptf.registry import Registry
from gptf.run_dir import RunFiles, file_sha256


def _plugin_record(info: dict[str, Any], name: str | None) -> dict[str, Any]:
    for record in info.get("plugins") or []:
        if isinstance(record, dict) and record.get("name") == name:
            return record
    return {}


def _describe(record: dict[str, Any], fallback: str | None) -> str:
    if not record:
        return f"plugin '{fallback}'" if fallback else "a plugin"
    origin = record.get("origin", "plugin")
    kind = "plugin file" if origin == "recipe" and str(record.get("location", "")).endswith(".py") else "plugin"
    version = f" {record['version']}" if record.get("version") else ""
    return f"{kind} {record.get('location') or record.get('name')}{version} ({origin}, named '{record.get('name')}')"


def check_plugin_files(recipe: Recipe, info: dict[str, Any], files: RunFiles) -> None:
    """Before loading plugins: a plugin file the run used that is gone is named with what it provided."""
    components = info.get("components") or {}
    for spec in recipe.plugins:
        if not (spec.endswith(".py") or "/" in spec or "\\" in spec):
            continue
        path = (files.root / spec).resolve()
        if path.is_file():
            continue
        provided = [f"{key} '{_spec_name(recipe, key)}'" for key, plugin in components.items() if plugin == path.stem]
        uses = f" for {', '.join(provided)}" if provided else ""
        raise CheckpointError(
            f"{files.root}: the run used plugin file {path}{uses}; that file is missing now",
            hint="put the plugin file back where it was, then try again",
        )


def check_components_present(recipe: Recipe, registry: Registry, info: dict[str, Any], files: RunFiles) -> None:
    """After loading plugins: every component the run used is still registered."""
    components = info.get("components") or {}
    problems = []
    for slot in component_slots(recipe):
        if slot.spec.name in registry.components[slot.kind]:
            continue
        plugin = components.get(slot.key)
        record = _plugin_record(info, plugin)
        problems.append(
            f"{slot.key}: the run used {slot.kind.replace('_', ' ')} '{slot.spec.name}' from "
            f"{_describe(record, plugin)}; it is unknown now (that plugin is not installed or failed to load)"
        )
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise CheckpointError(
            f"{files.root} cannot be rebuilt:\n{listed}",
            hint="install the plugin again (see 'gptf plugins' for what is loaded and what failed)",
        )


def check_tokenizer(files: RunFiles, tokenizer: Tokenizer, info: dict[str, Any]) -> None:
    """The run directory's tokenizer is the one the model was trained with."""
    record = info.get("tokenizer") or {}
    expected_sha, expected_size = record.get("sha256"), record.get("vocab_size")
    if expected_sha is None and expected_size is None:
        return  # a run from before fingerprints were recorded
    actual_sha = file_sha256(files.tokenizer)
    if expected_sha not in (None, actual_sha) or expected_size not in (None, tokenizer.vocab_size):
        raise CheckpointError(
            f"{files.tokenizer} is not the tokenizer this model was trained with: it has "
            f"{tokenizer.vocab_size} tokens (sha256 {actual_sha[:12]}…), training used {expected_size} tokens "
            f"(sha256 {str(expected_sha)[:12]}…, recorded in {files.info})",
            hint="put the run's own tokenizer.json back (it is written there at the end of 'gptf run')",
        )


def check_weight_shapes(model: torch.nn.Module, path: Path) -> None:
    """Compare the weights file's tensor shapes with the model built from the recipe."""
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors weights file ({exc})") from exc
    expected = {name: list(t.shape) for name, t in model.state_dict().items()}
    wrong = [
        f"{name}: file {shapes[name]}, model {expected[name]}"
        for name in expected
        if name in shapes and shapes[name] != expected[name]
    ]
    if wrong:
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        note = f" (the tokenizer has {vocab} tokens)" if vocab is not None else ""
        raise CheckpointError(
            f"{path}: the weights do not fit the model built from the recipe{note}: " + "; ".join(wrong[:3]),
            hint="were the weights, tokenizer or recipe copied from another run?",
        )


def _spec_name(recipe: Recipe, key: str) -> str:
    for slot in component_slots(recipe):
        if slot.key == key:
            return slot.spec.name
    return "?"
