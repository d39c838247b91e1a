"""Phase one of validation: plain data -> :class:`~gptf.recipe.schema.Recipe`.

Unknown keys (with a did-you-mean), wrong types and numbers that cannot work together are
all collected and reported at once, each with its key path (``model.norm.eps``). Phase two,
which needs the plugins (component names and parameters, a dry build of the model), is
:mod:`gptf.build.validate`.
"""

from __future__ import annotations

import copy
import math
import re
import typing
from typing import Any

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from gptf.errors import RecipeError, did_you_mean, shown
from gptf.recipe.limits import (
    INT64_MAX,
    LAYERS_MAX,
    MEMORY_NEIGHBOURS_MAX,
    SEED_RANGE,
    THREADS_MAX,
    int_problem,
    is_number,
    sampling_problems,
)
from gptf.recipe.schema import ComponentSpec, MemoryConfig, Recipe
from gptf.recipe.value_types import fits, type_name

#: A recipe's name is a folder name (checkpoints/<name>): one plain name, never '.' or '..'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)

    def strict(kind: type) -> None:
        def hook(value: Any, _: type) -> Any:
            if not fits(value, kind):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {shown(value)}")
            return kind(value)

        converter.register_structure_hook(kind, hook)

    for kind in (int, float, bool, str):
        strict(kind)

    def structure_memory(value: Any, _: type) -> MemoryConfig | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            keys = ", ".join(f.name for f in attrs.fields(MemoryConfig))
            raise TypeError(
                f"expected a mapping with {keys} (or null: no memory), got {type_name(type(value))} {shown(value)}"
            )
        return converter.structure(value, MemoryConfig)

    converter.register_structure_hook(MemoryConfig | None, structure_memory)

    def structure_spec(value: Any, _: type) -> ComponentSpec:
        if isinstance(value, str) and value:
            return ComponentSpec(value)
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            params = {k: v for k, v in value.items() if k != "name"}
            if not all(isinstance(k, str) for k in params):
                raise TypeError("component parameter names must be strings")
            return ComponentSpec(value["name"], params)
        raise TypeError(f"expected a component name or {{name: ..., <parameters>}}, got {shown(value)}")

    def unstructure_spec(spec: ComponentSpec) -> Any:
        return {"name": spec.name, **spec.params} if spec.params else spec.name

    converter.register_structure_hook(ComponentSpec, structure_spec)
    converter.register_unstructure_hook(ComponentSpec, unstructure_spec)

    def section_factory(cls: type) -> Any:
        """A section (``model:``, ``training:``...) must be a mapping: ``model: 3`` says so."""
        structure = converter.gen_structure_attrs_fromdict(cls)

        def hook(value: Any, _: type) -> Any:
            if not isinstance(value, dict):
                keys = ", ".join(f"{f.name}: ..." for f in attrs.fields(cls)[:2])
                raise TypeError(f"expected a mapping of keys ({keys}), got {type_name(type(value))} {shown(value)}")
            return structure(value, cls)

        return hook

    def list_factory(kind: type) -> Any:
        """A list must be a YAML list: ``demo_prompts: abc`` is not the prompts 'a', 'b', 'c'."""
        structure = list_structure_factory(kind, converter)

        def hook(value: Any, _: type) -> Any:
            if not isinstance(value, list):
                raise TypeError(f"expected a list, e.g. [a, b], got {type_name(type(value))} {shown(value)}")
            return structure(value, kind)

        return hook

    converter.register_structure_hook_factory(attrs.has, section_factory)
    converter.register_structure_hook_factory(lambda kind: typing.get_origin(kind) is list, list_factory)
    return converter


converter = _make_converter()


def _problems(exc: BaseException, path: str, cls: Any) -> list[str]:
    """Turn a cattrs error tree into ``path: message`` lines."""
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = [f.name for f in attrs.fields(exc.cl)]
        return [
            f"{path}.{key}: unknown key{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
            if path
            else f"{key}: unknown key{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
            for key in sorted(exc.extra_fields, key=str)
        ]
    if isinstance(exc, ClassValidationError):
        out: list[str] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            sub_path = f"{path}.{note.name}" if path else note.name
            field_type = note.type
            if isinstance(sub, KeyError):
                out.append(f"{sub_path}: required key missing")
            else:
                out.extend(_problems(sub, sub_path, field_type))
        for sub in without:
            out.extend(_problems(sub, path, cls))
        return out
    if isinstance(exc, IterableValidationError):
        out = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            out.extend(_problems(sub, f"{path}[{note.index}]", note.type))
        for sub in without:
            out.extend(_problems(sub, path, cls))
        return out
    message = str(exc)
    if isinstance(exc, (TypeError, ValueError, AttributeError)) and "expected" not in message:
        message = f"expected {type_name(cls)}: {message}"
    return [f"{path}: {message}"]


def structure_recipe(data: dict[str, Any], source: str) -> Recipe:
    """Phase one: the fixed structure. Raises :class:`RecipeError` with every problem."""
    try:
        recipe = converter.structure(data, Recipe)
    except (ClassValidationError, IterableValidationError) as exc:
        raise RecipeError(source, _problems(exc, "", Recipe)) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise RecipeError(source, [str(exc)]) from exc
    problems = check_shapes(recipe)
    if problems:
        raise RecipeError(source, problems)
    return recipe


def check_shapes(recipe: Recipe) -> list[str]:
    """Numbers that cannot work together, found before any work starts."""
    m, t, g = recipe.model, recipe.training, recipe.generation
    problems = []
    positive = {
        "model.n_layer": m.n_layer,
        "model.n_head": m.n_head,
        "model.n_embd": m.n_embd,
        "model.seq_len": m.seq_len,
        "model.mlp_ratio": m.mlp_ratio,
        "training.max_steps": t.max_steps,
        "training.batch_size": t.batch_size,
        "training.micro_batch": t.micro_batch,
        "training.bucket_batches": t.bucket_batches,
        "training.eval_interval": t.eval_interval,
        "training.log_interval": t.log_interval,
        "tokenizer.vocab_size": recipe.tokenizer.vocab_size,
        "generation.max_new_tokens": g.max_new_tokens,
    }
    problems += [f"{k}: must be > 0, got {v}" for k, v in positive.items() if v <= 0]
    problems += [f"{key}: must be a finite number, got {value}" for key, value in _non_finite(recipe)]
    problems += [f"{key}: {problem}" for key, problem in _int_problems(recipe)]
    if m.n_layer > LAYERS_MAX:
        problems.append(f"model.n_layer: must be at most {LAYERS_MAX}, got {shown(m.n_layer)}")
    if m.n_head > 0 and m.n_embd % m.n_head:
        problems.append(f"model.n_embd: {m.n_embd} is not divisible by model.n_head={m.n_head}")
    if m.n_kv_head is not None and (m.n_kv_head <= 0 or (m.n_head > 0 and m.n_head % m.n_kv_head)):
        problems.append(f"model.n_kv_head: {m.n_kv_head} must be > 0 and divide model.n_head={m.n_head}")
    if t.micro_batch > 0 and t.batch_size % t.micro_batch:
        problems.append(f"training.micro_batch: {t.micro_batch} does not divide training.batch_size={t.batch_size}")
    if t.micro_batch > t.batch_size > 0:
        problems.append(f"training.micro_batch: {t.micro_batch} is larger than training.batch_size={t.batch_size}")
    if not 0 <= m.dropout < 1:
        problems.append(f"model.dropout: must be in [0, 1), got {m.dropout}")
    if t.lr <= 0:
        problems.append(f"training.lr: must be > 0, got {t.lr}")
    if t.answer_start_tokens < 0:
        problems.append(
            f"training.answer_start_tokens: must be >= 0 (0 = every answer token counts the same), "
            f"got {t.answer_start_tokens}"
        )
    if not 0 < t.answer_start_weight <= 1000:
        problems.append(
            f"training.answer_start_weight: must be above 0 and at most 1000 (1 = the same as the other "
            f"answer tokens), got {t.answer_start_weight}"
        )
    if t.weight_decay < 0:
        problems.append(f"training.weight_decay: must be >= 0 (0 turns it off), got {t.weight_decay}")
    if m.init_std < 0:
        problems.append(f"model.init_std: must be >= 0, got {m.init_std}")
    if not recipe.data.train.strip():
        problems.append("data.train: is empty; name the JSONL file to train on, e.g. data/train.jsonl")
    if t.grad_clip < 0:
        problems.append(f"training.grad_clip: must be >= 0 (0 turns clipping off), got {t.grad_clip}")
    if recipe.data.augment_copies < 0:
        problems.append(f"data.augment_copies: must be >= 0, got {recipe.data.augment_copies}")
    if t.time_budget_s is not None and not t.time_budget_s > 0:
        problems.append(f"training.time_budget_s: must be > 0 seconds or null (no budget), got {t.time_budget_s}")
    if t.save_interval < 0:
        problems.append(f"training.save_interval: must be >= 0, got {t.save_interval}")
    if t.threads is not None and not 0 < t.threads <= THREADS_MAX:
        problems.append(f"training.threads: must be from 1 to {THREADS_MAX}, got {shown(t.threads)}")
    if recipe.tokenizer.vocab_size < 260 and recipe.tokenizer.type.name == "byte_bpe":
        problems.append("tokenizer.vocab_size: byte-level BPE needs at least 256 bytes + 4 specials = 260")
    sampling = {
        "temperature": g.temperature,
        "top_k": g.top_k,
        "top_p": g.top_p,
        "max_new_tokens": g.max_new_tokens,
        "beams": g.beams,
    }
    # (no seq_len bound here: a recipe's default of 64 new tokens is simply cut to what fits a
    # small model; a number typed for one answer, --max-new-tokens, is held to seq_len)
    if g.memory is not None:
        problems += memory_problems(g.memory)
    wrong = sampling_problems(sampling)
    problems += [f"generation.{key}: {problem}" for key, problem in wrong.items()]
    if not NAME_PATTERN.fullmatch(recipe.name):
        problems.append(
            f"name: {shown(recipe.name)} may only use letters, digits, '_', '-' and '.' (it is a folder name: "
            "at most 100 characters, not starting with '.' or '-')"
        )
    return problems


def memory_problems(memory: MemoryConfig) -> list[str]:
    """What is out of range in ``generation.memory`` (NaN fails every range here)."""
    problems = []
    if not (is_number(memory.weight) and 0 < memory.weight < 1):
        problems.append(
            f"generation.memory.weight: must be above 0 and below 1 (the share of the next-token probability "
            f"the taught answers vote with, the model keeping the rest; memory: null turns it off), "
            f"got {shown(memory.weight)}"
        )
    if not 1 <= memory.neighbours <= MEMORY_NEIGHBOURS_MAX:
        problems.append(
            f"generation.memory.neighbours: must be a whole number from 1 to {MEMORY_NEIGHBOURS_MAX}, "
            f"got {shown(memory.neighbours)}"
        )
    if not (is_number(memory.temperature) and 1e-3 <= memory.temperature <= 100):
        problems.append(f"generation.memory.temperature: must be from 0.001 to 100, got {shown(memory.temperature)}")
    return problems


def _int_problems(recipe: Recipe) -> list[tuple[str, str]]:
    """Whole numbers beyond what a 64-bit integer holds (and the seed's own range)."""
    found = []
    for section in ("model", "training", "generation", "data", "tokenizer"):
        config = getattr(recipe, section)
        for field in attrs.fields(type(config)):
            value = getattr(config, field.name)
            if isinstance(value, int) and not isinstance(value, bool):
                low, high = SEED_RANGE if (section, field.name) == ("training", "seed") else (-INT64_MAX - 1, INT64_MAX)
                problem = int_problem(value, low, high)
                if problem:
                    found.append((f"{section}.{field.name}", problem))
    return found


def _non_finite(recipe: Recipe) -> list[tuple[str, float]]:
    """Float settings that are NaN or infinite (YAML reads ``.nan`` and ``.inf``)."""
    found = []
    for section in ("model", "training", "generation"):
        config = getattr(recipe, section)
        for field in attrs.fields(type(config)):
            value = getattr(config, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                found.append((f"{section}.{field.name}", value))
    return found


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Structure a plain dict (e.g. a run directory's saved recipe)."""
    return structure_recipe(copy.deepcopy(data), source)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (component specs written back in YAML form)."""
    return converter.unstructure(recipe)
