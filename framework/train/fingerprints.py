"""Did it change? Every check of "is this still the same run?" lives here.

A run records what it was made with: ``run.json`` (tokenizer sha256 and size, which plugin
provided each component, the data files' hashes) and every resumable checkpoint's manifest
(the resolved recipe, data and tokenizer hashes). These checks turn a silent mismatch into
an error that says exactly what differs:

* resuming (``gptf run --resume``): :func:`recipe_differences`, :func:`data_differences`,
  :func:`check_tokenizer_unchanged`;
* continuing from a finished run (``--init-from``): :func:`tokenizer_difference`;
* loading a run (``gptf generate``, chat, serve): :func:`read_run_record`, :func:`check_plugin_files`,
  :func:`check_components_present`, :func:`check_tokenizer`, :func:`check_weight_shapes`,
  and last :func:`verify_run_files`: the sha256 of every file the model is rebuilt from, as
  recorded in ``run.json`` at the end of ``gptf run`` (:func:`run_file_fingerprints`). A
  flipped byte, a block of NaN in the weights or ``rope`` edited to ``alibi`` in the recipe
  is then an error, not a model that answers garbage (``--no-verify`` skips the check).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import SafetensorError

from gptf.build.components import component_slots
from gptf.build.plugins import is_plugin_file
from gptf.build.registry import Registry
from gptf.errors import CheckpointError
from gptf.interfaces import Tokenizer
from gptf.recipe import LoadedRecipe, Recipe, recipe_to_dict
from gptf.train.checkpoint import TOKENIZER, Checkpoint
from gptf.train.run_files import RunFiles, file_sha256, write_json

#: What to do about a run folder that cannot be verified.
NO_VERIFY_HINT = "to load it anyway, add --no-verify (only if you know why it differs)"


def model_files(files: RunFiles) -> list[Path]:
    """The files a model is rebuilt from: recipe, tokenizer, weights (and int8 weights if made)."""
    paths = [files.recipe, files.tokenizer, files.weights]
    return [*paths, files.quantized] if files.quantized.is_file() else paths


def run_file_fingerprints(files: RunFiles) -> dict[str, dict[str, Any]]:
    """``{"model.safetensors": {"bytes", "sha256"}, ...}`` for run.json's ``files``."""
    return {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in model_files(files)}


def refresh_fingerprint(files: RunFiles, path: Path) -> None:
    """Record ``path``'s new size and sha256 in run.json after gptf itself changed it on purpose
    (``gptf eval --calibrate --apply`` writes the chosen answer filter into recipe.yaml)."""
    info = files.read_info()
    info.setdefault("files", {})[path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    write_json(files.info, info)


def read_run_record(files: RunFiles, *, verify: bool = True) -> dict[str, Any]:
    """``run.json``, checked. Without it (or without its checksums) nothing about the run can
    be verified, so that is an error unless ``verify`` is off."""
    if not files.info.is_file():
        if not verify:
            return {}
        raise CheckpointError(
            f"{files.root} has no {files.info.name}: the record of what the run was made with (and the checksums "
            "of its files) is missing, so gptf cannot tell whether the files still belong together",
            hint=NO_VERIFY_HINT,
        )
    info = files.read_info()
    if verify and not info.get("files"):
        raise CheckpointError(
            f"{files.info} records no checksums of the run's files (a run from an older gptf?)",
            hint=NO_VERIFY_HINT,
        )
    return info


def verify_run_files(files: RunFiles, info: dict[str, Any], paths: list[Path]) -> None:
    """Each of ``paths`` has the size and sha256 recorded in run.json at the end of the run."""
    recorded = info.get("files") or {}
    for path in paths:
        record = recorded.get(path.name)
        if record is None:
            raise CheckpointError(f"{files.info} has no checksum for {path.name}", hint=NO_VERIFY_HINT)
        size = path.stat().st_size
        sha = file_sha256(path) if size == record["bytes"] else None
        if sha != record["sha256"]:
            found = f"sha256 {sha[:12]}…" if sha else f"{size:,} bytes"
            expected = f"sha256 {record['sha256'][:12]}…" if sha else f"{record['bytes']:,} bytes"
            raise CheckpointError(
                f"{path}: changed since the run saved it ({found}, recorded in {files.info.name}: {expected}); "
                "it may be corrupt (a bad copy or disk) or edited",
                hint=f"copy the run folder again from where it came from; {NO_VERIFY_HINT}",
            )


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
        if not is_plugin_file(spec):
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


# ---------------------------------------------------------------- resuming a run

#: Recipe keys that may change between the interrupted run and its resumption: they do
#: not change what the model learns (where files go, how often to log/evaluate/save,
#: what to do after training). Anything else differing refuses to resume unless forced.
MAY_DIFFER = (
    "name",
    "output_dir",
    "demo_prompts",
    "generation",
    "quantizer",
    "tokenizer.rebuild",
    "training.log_interval",
    "training.eval_interval",
    "training.save_interval",
    "training.threads",
    "training.activation_checkpointing",  # the same numbers, recomputed: only memory changes
)


def training_data(loaded: LoadedRecipe) -> dict[str, str | None]:
    """The data files whose content decides what the model learns, by recipe key."""
    return {"data.train": loaded.recipe.data.train, "data.val": loaded.recipe.data.val}


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay whole)."""
    if not isinstance(data, Mapping) or (prefix and not data):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in MAY_DIFFER)


def recipe_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint -> now`` for each setting that changes what the model learns."""
    old, new = flatten(saved), flatten(current)
    defaults = flatten(recipe_to_dict(Recipe(name="defaults")))  # a key added since: its default then
    lines = []
    for key in sorted(set(old) | set(new)):
        if _ignored(key):
            continue
        a, b = old.get(key, defaults.get(key, "(not set)")), new.get(key, defaults.get(key, "(not set)"))
        if a != b:
            lines.append(f"{key}: {_short(a)} (checkpoint) -> {_short(b)} (now)")
    return lines


def data_differences(saved: Mapping[str, Any], current: Mapping[str, Mapping[str, str]]) -> list[str]:
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key) or {}, current.get(key) or {}
        if a.get("sha256") != b.get("sha256"):
            path = b.get("path") or a.get("path")
            lines.append(
                f"{key}: {path} changed since the checkpoint "
                f"(sha256 {str(a.get('sha256'))[:12]}… -> {str(b.get('sha256'))[:12]}…)"
            )
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def data_fingerprints(files: Mapping[str, str | None]) -> dict[str, dict[str, str]]:
    """``{"data.train": "data/train.jsonl"}`` -> ``{"data.train": {"path", "sha256"}}``."""
    return {key: {"path": str(path), "sha256": file_sha256(Path(path))} for key, path in files.items() if path}


def check_tokenizer_unchanged(checkpoint: Checkpoint, tokenizer_path: Path) -> None:
    """The ids in a checkpoint only mean something with the tokenizer that made them."""
    saved = checkpoint.manifest.get("tokenizer") or {}
    now = file_sha256(tokenizer_path) if tokenizer_path.is_file() else None
    if saved.get("sha256") != now:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: the tokenizer differs: {tokenizer_path} has "
            f"sha256 {str(now)[:12]}…, the checkpoint was trained with {str(saved.get('sha256'))[:12]}…",
            hint=f"put the original back: copy {checkpoint.file(TOKENIZER)} to {tokenizer_path}",
        )


# ------------------------------------------------------- continuing from a finished run


def tokenizer_difference(a: Tokenizer, b: Tokenizer) -> str:
    """How two tokenizers differ (``""``: the same ids for the same bytes)."""
    if a.vocab_size != b.vocab_size:
        return f"{a.vocab_size} vs {b.vocab_size} tokens"
    for name in ("bos_id", "eos_id", "pad_id", "unk_id"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} {getattr(a, name)} vs {getattr(b, name)}"
    differing = [i for i in range(a.vocab_size) if a.token_bytes(i) != b.token_bytes(i)]
    if differing:
        first = differing[0]
        return (
            f"{len(differing)} of {a.vocab_size} tokens differ "
            f"(first: id {first} is {a.token_bytes(first)!r} vs {b.token_bytes(first)!r})"
        )
    return ""
