"""Recipes: YAML files that compose components into a model and a training run.

A recipe may ``extends:`` another (path relative to itself, deep merge), and any value
can be overridden from the command line as ``KEY=VALUE`` (``model.norm=layernorm``).
Validation happens in two phases: the fixed structure here (unknown keys, wrong types,
impossible shapes), then each component's own parameters against the registry
(:func:`gptf.builder.check_components`). All problems are reported at once.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from gptf.errors import GptfError, RecipeError, did_you_mean


@attrs.frozen
class ComponentSpec:
    """A component choice: its registered ``name`` and its own parameters."""

    name: str
    params: dict[str, Any] = attrs.field(factory=dict)


def _spec(name: str, **params: Any) -> Any:
    return attrs.Factory(lambda: ComponentSpec(name, dict(params)))


@attrs.frozen
class TokenizerConfig:
    type: ComponentSpec = _spec("byte_bpe")
    path: str = "tokenizer/tokenizer.json"
    vocab_size: int = 824
    rebuild: bool = False  # retrain even if ``path`` exists


@attrs.frozen
class DataConfig:
    train: str = "data/train.jsonl"
    val: str | None = "data/val.jsonl"
    test: str | None = None
    truncate: bool = True  # samples longer than seq_len: cut (True) or refuse (False)
    augment_copies: int = 0  # extra filler-word variants of each train prompt (gptf.augment)


@attrs.frozen
class ModelConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    seq_len: int = 128
    n_kv_head: int | None = None  # None: same as n_head
    mlp_ratio: int = 4
    bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    positional: ComponentSpec = _spec("rope")
    norm: ComponentSpec = _spec("rmsnorm")
    attention: ComponentSpec = _spec("sdpa")
    mlp: ComponentSpec = _spec("silu")


@attrs.frozen
class TrainingConfig:
    max_steps: int = 2000
    batch_size: int = 16
    micro_batch: int = 16
    bucket_batches: int = 1  # >1: group each window of this many batches by sample length (less padding)
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    optimizer: ComponentSpec = _spec("adamw")
    scheduler: ComponentSpec = _spec("warmup_cosine")
    eval_interval: int = 100
    log_interval: int = 10
    save_interval: int = 0  # 0: only at the end
    threads: int | None = None  # None: PyTorch's default (physical cores)
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    seed: int = 42
    callbacks: list[ComponentSpec] = attrs.field(factory=list)


@attrs.frozen
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    constraints: list[ComponentSpec] = attrs.field(factory=list)


@attrs.frozen
class Recipe:
    """A fully resolved, validated recipe."""

    name: str
    plugins: list[str] = attrs.field(factory=list)
    output_dir: str | None = None
    tokenizer: TokenizerConfig = attrs.Factory(TokenizerConfig)
    data: DataConfig = attrs.Factory(DataConfig)
    model: ModelConfig = attrs.Factory(ModelConfig)
    training: TrainingConfig = attrs.Factory(TrainingConfig)
    quantizer: ComponentSpec = _spec("dynamic_int8")
    generation: GenerationConfig = attrs.Factory(GenerationConfig)
    demo_prompts: list[str] = attrs.field(factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"checkpoints/{self.name}")


@attrs.frozen
class LoadedRecipe:
    """A recipe plus where it came from."""

    recipe: Recipe
    chain: list[Path]  # the file, then what it extends, ...
    base_dir: Path  # folder of the recipe file: plugin paths are relative to it
    data: dict[str, Any]  # the merged plain dict, as saved in a run directory
    overrides: tuple[str, ...] = ()  # the KEY=VALUE texts applied, to repeat them (gptf run --resume)


# ---------------------------------------------------------------------------- YAML


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


# ------------------------------------------------------------- merging & overrides


def deep_merge(base: Any, override: Any, *, top: bool = True) -> Any:
    """Merge ``override`` into ``base`` (neither is modified).

    Mappings merge key by key. A component given by a different name replaces the old
    one entirely, so no stale parameters survive a swap (``rope`` -> ``learned``). The
    recipe's own top-level ``name`` is not a component, so ``top`` exempts it.
    """
    if isinstance(base, str) and isinstance(override, dict) and "name" not in override:
        base = {"name": base}  # parameters for a component given by bare name
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
    if "=" not in text:
        raise RecipeError("command line", [f"override '{text}' must look like KEY=VALUE (e.g. training.max_steps=300)"])
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not key.strip() or any(not p or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise RecipeError("command line", [f"override '{text}': '{key}' is not a key path like model.n_layer"])
    value = parse_yaml(raw, f"override '{text}'") if raw.strip() else ""
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
        raise RecipeError(str(path), [f"extends: expected a path to another recipe, got {parent!r}"])
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        raise RecipeError(str(path), [f"extends: file not found: {parent_path}"])
    base, chain = resolve_chain(parent_path, (*seen, path))
    merged = deep_merge(base, data)
    return merged, [path, *chain]


# ---------------------------------------------------------------- structuring


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)

    def strict(kind: type, check: Any) -> None:
        def hook(value: Any, _: type) -> Any:
            if not check(value):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
            return kind(value)

        converter.register_structure_hook(kind, hook)

    strict(int, lambda v: isinstance(v, int) and not isinstance(v, bool))
    strict(float, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    strict(bool, lambda v: isinstance(v, bool))
    strict(str, lambda v: isinstance(v, str))

    def structure_spec(value: Any, _: type) -> ComponentSpec:
        if isinstance(value, str) and value:
            return ComponentSpec(value)
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            params = {k: v for k, v in value.items() if k != "name"}
            if not all(isinstance(k, str) for k in params):
                raise TypeError("component parameter names must be strings")
            return ComponentSpec(value["name"], params)
        raise TypeError(f"expected a component name or {{name: ..., <parameters>}}, got {value!r}")

    def unstructure_spec(spec: ComponentSpec) -> Any:
        return {"name": spec.name, **spec.params} if spec.params else spec.name

    converter.register_structure_hook(ComponentSpec, structure_spec)
    converter.register_unstructure_hook(ComponentSpec, unstructure_spec)
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
        shown = getattr(cls, "__name__", None) or str(cls).replace("typing.", "")
        message = f"expected {shown}: {message}"
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
    if t.grad_clip < 0:
        problems.append(f"training.grad_clip: must be >= 0 (0 turns clipping off), got {t.grad_clip}")
    if recipe.data.augment_copies < 0:
        problems.append(f"data.augment_copies: must be >= 0, got {recipe.data.augment_copies}")
    if t.save_interval < 0:
        problems.append(f"training.save_interval: must be >= 0, got {t.save_interval}")
    if t.threads is not None and t.threads <= 0:
        problems.append(f"training.threads: must be > 0, got {t.threads}")
    if recipe.tokenizer.vocab_size < 260 and recipe.tokenizer.type.name == "byte_bpe":
        problems.append("tokenizer.vocab_size: byte-level BPE needs at least 256 bytes + 4 specials = 260")
    if g.temperature < 0:
        problems.append(f"generation.temperature: must be >= 0, got {g.temperature}")
    if g.top_k < 0:
        problems.append(f"generation.top_k: must be >= 0 (0 = off), got {g.top_k}")
    if not 0 < g.top_p <= 1:
        problems.append(f"generation.top_p: must be in (0, 1], got {g.top_p}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", recipe.name):
        problems.append(f"name: '{recipe.name}' may only use letters, digits, '_', '-' and '.'")
    return problems


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


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Structure a plain dict (e.g. a run directory's saved recipe)."""
    return structure_recipe(copy.deepcopy(data), source)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (component specs written back in YAML form)."""
    return converter.unstructure(recipe)
