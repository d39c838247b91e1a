"""``gptf plugin check FILE_OR_MODULE``: the contract tests for a student's plugin.

Loads the plugin on its own (beside the built-ins, installed plugins left out), then puts
every component it registers through the checks its kind promises in
:mod:`gptf.hookspecs`, on a tiny model that runs in milliseconds:

    builds          the factory accepts the engine's arguments (and only defaults)
    shapes          what goes in and comes out has the documented shape
    causality       no future token changes an earlier output
    KV cache        generating token by token (or a few at a time) gives what the whole sequence gives
    save/load       the weights survive a safetensors round trip
    deterministic   the same seed builds the same thing; the same input, the same output
    training step   one optimizer step gives a finite loss and gradients

Each failure is explained in plain words, with what to change. A target may be a ``.py``
file, a package folder, a project folder with a ``pyproject.toml`` (its ``gptf`` entry
points are checked, nothing is installed) or an importable module name.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from gptf.build.components import build_model
from gptf.build.plugins import ENTRY_POINT_GROUP, closest_plugin_file, load_plugins
from gptf.build.registry import ComponentInfo, Registry
from gptf.errors import PluginError
from gptf.interfaces import SPECIAL_TOKENS
from gptf.recipe import Recipe, recipe_from_dict

# The tiny model every model part is tested in: 2 layers, 4 heads of size 8.
TINY_MODEL = {"n_layer": 2, "n_head": 4, "n_embd": 32, "seq_len": 24}
VOCAB = 64
LENGTH = 16  # tokens per test sequence
CHANGE_FROM = 10  # causality: tokens from here on are changed
TOKENIZER_VOCAB = 400  # SentencePiece needs room for every character of CORPUS + 256 bytes
CORPUS = [
    "用户:什么是注意力机制？\n助手:注意力机制让模型在生成每个词时关注输入中最相关的部分。",
    "用户:解释蒸馏水与纯水区别？\n助手:蒸馏水是通过蒸馏得到的水，纯水是去除了杂质的水。",
    "用户:什么是梯度下降？\n助手:梯度下降沿着损失函数下降最快的方向一步步调整参数。",
    "用户:What is a token?\n助手:A token is a piece of text, such as a character or a word.",
    "用户:为什么要分词？\n助手:模型只认识数字，分词把文字切成词元，再把词元变成编号。",
] * 4
UNSEEN = "没见过的字：魑魅魍魉 😀 and spaces  twice\n第二行"


@attrs.frozen
class Finding:
    """The outcome of one check on one component."""

    component: str  # "attention 'peek'"
    check: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""


@attrs.define
class Report:
    target: str
    plugin: str
    components: list[str] = attrs.field(factory=list)
    findings: list[Finding] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "fail" for f in self.findings)


class CheckFailed(Exception):
    """Raised inside a check with the plain-words explanation."""


# ------------------------------------------------------------------ loading the plugin


@contextlib.contextmanager
def _on_sys_path(folder: Path | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def plugin_specs(target: str) -> tuple[list[str], Path | None]:
    """What to load for ``target`` (files or module names) and a folder to import from."""
    path = Path(target)
    if path.is_file():
        if path.name == "__init__.py":  # a package's own file: import it as the package
            return [path.resolve().parent.name], path.resolve().parent.parent
        if path.suffix != ".py":
            raise PluginError(f"{target}: a plugin file must be a .py file")
        return [str(path.resolve())], None
    if path.is_dir():
        if (path / "pyproject.toml").is_file():
            return _entry_point_modules(path / "pyproject.toml")
        if (path / "__init__.py").is_file():
            return [path.resolve().name], path.resolve().parent
        raise PluginError(f"{target}: a folder to check needs a pyproject.toml (a package project) or an __init__.py")
    if "/" in target or "\\" in target or target.endswith(".py"):
        close = closest_plugin_file(path)
        guess = f" (did you mean {close}?)" if close is not None else ""
        raise PluginError(f"plugin file or folder not found: {target}{guess}")
    return [target], None


def _entry_point_modules(pyproject: Path) -> tuple[list[str], Path]:
    """The modules a project registers under ``[project.entry-points.gptf]``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise PluginError("reading pyproject.toml needs Python 3.11+; check the plugin's module file instead") from None
    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle).get("project", {})
    entries = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    if not entries:
        raise PluginError(
            f"{pyproject}: no [project.entry-points.{ENTRY_POINT_GROUP}] section, so gptf would never find this "
            f'package; add e.g.\n  [project.entry-points.{ENTRY_POINT_GROUP}]\n  my_plugin = "my_package"'
        )
    root = pyproject.parent.resolve()
    source = root / "src" if (root / "src").is_dir() else root
    return sorted({value.split(":")[0].strip() for value in entries.values()}), source


def load_for_check(spec: str) -> tuple[Registry, str]:
    """The built-ins plus this one plugin (entry points left out); its registered name."""
    loaded = load_plugins([spec], Path.cwd(), entry_points=False)
    builtin = next((i.name for i in loaded.infos if i.origin == "built-in" and i.location == spec), None)
    return Registry(loaded), builtin or loaded.infos[-1].name


# ------------------------------------------------------------------ running checks


def check_target(target: str) -> list[Report]:
    """Check every plugin ``target`` names; one report per plugin module."""
    specs, folder = plugin_specs(target)
    reports = []
    with _on_sys_path(folder):
        for spec in specs:
            registry, name = load_for_check(spec)
            report = Report(target, name)
            for kind, components in registry.components.items():
                for info in components.values():
                    if info.plugin == name:
                        report.components.append(f"{kind} '{info.name}'")
                        report.findings += check_component(registry, info)
            if not report.components:
                report.findings.append(
                    Finding(f"plugin '{name}'", "registers", "fail", "its hooks returned no components (an empty dict)")
                )
            reports.append(report)
    return reports


def check_component(registry: Registry, info: ComponentInfo) -> list[Finding]:
    label = f"{info.kind.replace('_', ' ')} '{info.name}'"
    required = [n for n, p in info.parameters().items() if p.default is p.empty]
    if required:
        return [
            Finding(
                label,
                "builds",
                "skip",
                f"not checked: parameter(s) {', '.join(required)} have no default, and the check builds every "
                "component with its defaults; give them defaults to have it checked",
            )
        ]
    checks = CHECKS_BY_KIND.get(info.kind, [])
    findings = []
    for name, check in checks:
        try:
            with torch.random.fork_rng():
                detail = check(registry, info) or ""
            findings.append(Finding(label, name, "pass", detail))
        except CheckFailed as exc:
            findings.append(Finding(label, name, "fail", str(exc)))
        except Exception as exc:
            findings.append(Finding(label, name, "fail", f"raised {type(exc).__name__}: {exc}"))
        if name == "builds" and findings[-1].status == "fail":
            break  # nothing else can run
    return findings


# ------------------------------------------------------------------ model parts


def tiny_recipe(kind: str, name: str, **model: Any) -> Recipe:
    """A tiny model with ``name`` in the ``kind`` slot and built-ins everywhere else."""
    return recipe_from_dict({"name": "plugin_check", "model": {**TINY_MODEL, **model, kind: name}})


def tiny_model(registry: Registry, info: ComponentInfo, seed: int = 0, **model: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(tiny_recipe(info.kind, info.name, **model), registry, VOCAB).eval()


def random_ids(batch: int = 2, length: int = LENGTH, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _build(registry: Registry, info: ComponentInfo) -> str:
    model = tiny_model(registry, info)
    own = _own_parameters(model, info)
    return f"{own:,} parameters of its own in a 2-layer test model" if own else "no parameters of its own"


def _own_parameters(model: nn.Module, info: ComponentInfo) -> int:
    """Parameters inside the component's own modules (for the report)."""
    modules: list[nn.Module] = []
    if info.kind == "positional":
        modules = [model.positional]
    for block in model.blocks:
        modules += {
            "norm": [getattr(block, n) for n in ("norm1", "norm2", "norm") if hasattr(block, n)],
            "attention": [block.attn.attention],
            "mlp": [block.mlp],
        }.get(info.kind, [])
    if info.kind == "norm":
        modules.append(model.norm)
    if info.kind == "block":  # its norms and any layers of its own: all but the attention and the MLP
        inner = {id(p) for block in model.blocks for m in (block.attn, block.mlp) for p in m.parameters()}
        return sum(p.numel() for block in model.blocks for p in block.parameters() if id(p) not in inner)
    return sum(p.numel() for m in modules for p in m.parameters())


def _expect_shape(what: str, got: Any, expected: tuple[int, ...], rule: str) -> None:
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} returned {type(got).__name__}, not a tensor; {rule}")
    if tuple(got.shape) != expected:
        raise CheckFailed(f"{what} gave shape {tuple(got.shape)}, expected {expected}; {rule}")


def _shapes(registry: Registry, info: ComponentInfo) -> str:
    B, T, C, H, D = 2, 6, TINY_MODEL["n_embd"], TINY_MODEL["n_head"], TINY_MODEL["n_embd"] // TINY_MODEL["n_head"]
    seq_len = TINY_MODEL["seq_len"]
    where = f"model.{info.kind}"
    if info.kind == "norm":
        layer = registry.build("norm", info.name, {}, where, dim=C)
        _expect_shape("norm(x) with x (2, 6, 32)", layer(torch.randn(B, T, C)), (B, T, C), "a norm keeps the shape")
    elif info.kind == "mlp":
        block = registry.build("mlp", info.name, {}, where, dim=C, hidden_dim=4 * C, bias=True)
        _expect_shape("mlp(x) with x (2, 6, 32)", block(torch.randn(B, T, C)), (B, T, C), "an MLP keeps the shape")
    elif info.kind == "attention":
        for n_kv in (H, H // 2):
            core = registry.build(
                "attention", info.name, {}, where, n_head=H, n_kv_head=n_kv, head_dim=D, seq_len=seq_len
            )
            q, k, v = torch.randn(B, H, T, D), torch.randn(B, n_kv, T, D), torch.randn(B, n_kv, T, D)
            rule = "attention returns (B, H, Tq, D)"
            _expect_shape(f"attention(q, k, v) with {n_kv} kv heads", core(q, k, v), (B, H, T, D), rule)
            _expect_shape("attention with 2 queries and 6 keys", core(q[:, :, -2:], k, v), (B, H, 2, D), rule)
            bias = torch.zeros(H, T, T)
            _expect_shape("attention with a score bias", core(q, k, v, bias), (B, H, T, D), rule)
    elif info.kind == "positional":
        pos = registry.build("positional", info.name, {}, where, n_embd=C, n_head=H, head_dim=D, seq_len=seq_len)
        positions = torch.arange(3, 3 + T)
        _expect_shape("embed(x) with x (2, 6, 32)", pos.embed(torch.randn(B, T, C), positions), (B, T, C),
                      "embed returns the embeddings' shape")  # fmt: skip
        q, k = pos.rotate(torch.randn(B, H, T, D), torch.randn(B, H // 2, T, D), positions)
        _expect_shape("rotate(q, k): q", q, (B, H, T, D), "rotate keeps the shapes of q and k")
        _expect_shape("rotate(q, k): k (2 kv heads)", k, (B, H // 2, T, D), "rotate keeps the shapes of q and k")
        bias = pos.score_bias(positions, torch.arange(0, 3 + T))
        if bias is not None:
            try:
                torch.broadcast_shapes(tuple(bias.shape), (H, T, 3 + T))
            except RuntimeError:
                raise CheckFailed(
                    f"score_bias(q_positions, k_positions) gave shape {tuple(bias.shape)}; it must fit "
                    f"(heads, queries, keys) = {(H, T, 3 + T)}"
                ) from None
    elif info.kind == "block":
        from gptf.interfaces import AttentionContext

        model = tiny_model(registry, info)
        out = model.blocks[0](torch.randn(B, T, C), AttentionContext(model.positional, torch.arange(T)))
        _expect_shape("block(x, context) with x (2, 6, 32)", out, (B, T, C), "a block keeps the shape")
    logits = tiny_model(registry, info)(random_ids())
    _expect_shape("the model with it", logits, (2, LENGTH, VOCAB), "logits are (batch, tokens, vocabulary)")
    return ""


CAUSAL_HINTS = {
    "attention": "apply the causal mask before the softmax, e.g. scores.masked_fill(~causal_mask(Tq, Tk), "
    "float('-inf')) from gptf.interfaces (remember the queries are the LAST Tq of the Tk positions)",
    "positional": "a positional encoding may only use each token's own position; it must not mix tokens",
    "norm": "normalise over each token's own features (the last dimension, dim=-1), never across tokens",
    "mlp": "an MLP must treat every token on its own: only work on the last dimension",
    "block": "a block may mix tokens only through its attention (attention(x, context)); its norms, MLP and "
    "any layers of its own must treat every token on its own",
}


def _assert_causal(model: nn.Module, kind: str, setting: str = "") -> None:
    ids = random_ids(batch=1)
    changed = ids.clone()
    changed[0, CHANGE_FROM:] = (changed[0, CHANGE_FROM:] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(ids), model(changed)
    differs = (before[0, :CHANGE_FROM] - after[0, :CHANGE_FROM]).abs().amax(dim=-1) > 1e-5  # (CHANGE_FROM,)
    if bool(differs.any()):
        first = int(differs.nonzero()[0])
        raise CheckFailed(
            f"it looks into the future{setting}: changing tokens {CHANGE_FROM}..{LENGTH - 1} changed the "
            f"output at position {first}, which comes before them. A language model predicting token "
            f"{first + 1} must not see it or anything after it. Fix: {CAUSAL_HINTS[kind]}"
        )


def _causality(registry: Registry, info: ComponentInfo) -> str:
    _assert_causal(tiny_model(registry, info), info.kind)
    if info.kind in ("attention", "positional", "block"):
        _assert_causal(tiny_model(registry, info, n_kv_head=2), info.kind, " with grouped-query attention")
    if info.kind == "attention":
        _assert_causal(tiny_model(registry, info, positional="alibi"), info.kind, " with a score bias (ALiBi)")
    return ""


def _kv_cache(registry: Registry, info: ComponentInfo) -> str:
    from gptf.model import KVCache

    model = tiny_model(registry, info)
    config = model.config
    ids = random_ids(batch=1)
    # the prompt, then one token at a time, and a chunk of 4 (draft and verify feeds guesses so)
    bounds = [0, 10, 11, 15, *range(16, LENGTH + 1)]
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(config.n_layer, 1, config.n_kv_head, config.seq_len, config.head_dim)
        steps = [model(ids[:, a:b], cache) for a, b in itertools.pairwise(bounds)]
    stepwise = torch.cat(steps, dim=1)
    gap = float((full - stepwise).abs().max())
    if not gap < 1e-4:
        raise CheckFailed(
            f"generating with the KV cache (token by token, or a few tokens at once) gives different outputs "
            f"than running the whole sequence (largest difference {gap:.3g}). During generation the model sees "
            f"new tokens whose positions do not start at 0, and more keys than queries (the queries are the "
            f"last ones): use the 'positions' you are given and compare with gptf.interfaces.causal_mask(Tq, Tk)"
        )
    return ""


def _save_load(registry: Registry, info: ComponentInfo) -> str:
    model = tiny_model(registry, info, seed=0)
    fresh = tiny_model(registry, info, seed=123)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        try:
            safetensors.torch.save_model(model, str(path))
        except Exception as exc:
            raise CheckFailed(
                f"the weights cannot be saved as safetensors ({type(exc).__name__}: {exc}); keep learned "
                f"tensors as nn.Parameter and fixed ones as buffers"
            ) from exc
        missing, unexpected = safetensors.torch.load_model(fresh, str(path), strict=False)
    if missing or unexpected:
        raise CheckFailed(f"loading the saved weights did not match: missing {missing}, unexpected {unexpected}")
    ids = random_ids()
    with torch.no_grad():
        gap = float((model(ids) - fresh(ids)).abs().max())
    if not gap < 1e-6:
        raise CheckFailed(
            f"after saving and loading the weights the model answers differently (largest difference {gap:.3g}): "
            f"part of the component's state is not saved. Learned tensors must be nn.Parameter; fixed tables "
            f"must be buffers computed the same way in __init__ every time (no unseeded randomness)"
        )
    return ""


def _deterministic(registry: Registry, info: ComponentInfo) -> str:
    a, b = tiny_model(registry, info, seed=7), tiny_model(registry, info, seed=7)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        if not torch.equal(x, y):
            raise CheckFailed(
                f"two models built with the same seed differ in '{name}': the component uses randomness "
                f"that torch.manual_seed does not control (Python's random, numpy, the clock); use torch's"
            )
    ids = random_ids()
    with torch.no_grad():
        first, second, twin = a(ids), a(ids), b(ids)
    if not torch.equal(first, second):
        raise CheckFailed("the same input gave two different outputs in eval mode: the forward pass is random")
    if not torch.equal(first, twin):
        raise CheckFailed(
            "two models built with the same seed answer differently (their saved weights are equal, so it is "
            "state outside state_dict): the component uses randomness that torch.manual_seed does not control "
            "(Python's random, numpy, the clock); use torch's"
        )
    return ""


def _training_step(registry: Registry, info: ComponentInfo) -> str:
    model = tiny_model(registry, info).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = random_ids(batch=4)
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    if not torch.isfinite(loss):
        raise CheckFailed(f"the loss of a fresh model is {loss.item()}, not a finite number: look for a division "
                          f"by zero, log of 0 or sqrt of a negative number")  # fmt: skip
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        raise CheckFailed(f"the gradients of {bad[0]} are not finite numbers")
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    if unused:
        raise CheckFailed(
            f"{unused[0]} gets no gradient: it never influences the output, so training cannot change it "
            f"(is it used in forward? is it cut off with .detach() or torch.no_grad()?)"
        )
    optimizer.step()
    with torch.no_grad():
        after = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    if not torch.isfinite(after):
        raise CheckFailed("after one optimizer step the loss is no longer a finite number")
    return f"loss {loss.item():.3f} -> {after.item():.3f} after one AdamW step"


MODEL_CHECKS: list[tuple[str, Callable[[Registry, ComponentInfo], str | None]]] = [
    ("builds", _build),
    ("shapes", _shapes),
    ("causality", _causality),
    ("save/load", _save_load),
    ("deterministic", _deterministic),
    ("training step", _training_step),
]
WITH_KV_CACHE = [*MODEL_CHECKS[:3], ("KV cache", _kv_cache), *MODEL_CHECKS[3:]]


# ------------------------------------------------------------------ tokenizers


def _new_tokenizer(registry: Registry, info: ComponentInfo, train: bool = True) -> Any:
    tokenizer = registry.build("tokenizer", info.name, {}, "tokenizer.type", vocab_size=TOKENIZER_VOCAB)
    if train:
        tokenizer.train(iter(CORPUS))
    return tokenizer


def _tokenizer_builds(registry: Registry, info: ComponentInfo) -> str:
    tokenizer = _new_tokenizer(registry, info)
    if tokenizer.vocab_size != TOKENIZER_VOCAB:
        raise CheckFailed(
            f"asked for {TOKENIZER_VOCAB} tokens it made {tokenizer.vocab_size}; the model's embedding is "
            f"built with tokenizer.vocab_size, so the trained tokenizer must have exactly that many"
        )
    ids = [tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id]
    if len(set(ids)) != 4 or not all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids):
        raise CheckFailed(f"the special tokens {', '.join(SPECIAL_TOKENS)} need four different ids, got {ids}")
    return f"trained on {len(CORPUS)} short texts: {tokenizer.vocab_size} tokens"


def _tokenizer_roundtrip(registry: Registry, info: ComponentInfo) -> str:
    tokenizer = _new_tokenizer(registry, info)
    for text in [CORPUS[0], UNSEEN]:
        ids = tokenizer.encode(text)
        if not all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids):
            raise CheckFailed(f"encode({text[:12]!r}...) returned ids outside 0..{tokenizer.vocab_size - 1}")
        back = tokenizer.decode(ids)
        if back != text:
            raise CheckFailed(f"decode(encode(text)) changed the text: {text!r} came back as {back!r}")
        pieces = b"".join(tokenizer.token_bytes(i) for i in ids)
        if pieces != text.encode("utf-8"):
            raise CheckFailed(
                "the token_bytes of the ids of a text, joined, are not the text's UTF-8 bytes; token_bytes(id) "
                "must return exactly the bytes that token stands for (b'' for special tokens)"
            )
    if any(tokenizer.token_bytes(i) for i in (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)):
        raise CheckFailed("token_bytes of <bos>/<eos>/<pad> must be b'' (special tokens stand for no text)")
    return f"{len(UNSEEN)} unseen characters -> {len(tokenizer.encode(UNSEEN))} tokens and back"


def _tokenizer_save_load(registry: Registry, info: ComponentInfo) -> str:
    tokenizer = _new_tokenizer(registry, info)
    fresh = _new_tokenizer(registry, info, train=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        tokenizer.save(path)
        fresh.load(path)
    same = fresh.vocab_size == tokenizer.vocab_size and all(
        fresh.encode(t) == tokenizer.encode(t) for t in (CORPUS[1], UNSEEN)
    )
    specials = [(t.bos_id, t.eos_id, t.pad_id, t.unk_id) for t in (tokenizer, fresh)]
    if not same or specials[0] != specials[1]:
        raise CheckFailed("after save and load the tokenizer gives different ids: save must write everything it knows")
    return ""


def _tokenizer_deterministic(registry: Registry, info: ComponentInfo) -> str:
    a, b = _new_tokenizer(registry, info), _new_tokenizer(registry, info)
    if a.encode(UNSEEN + CORPUS[2]) != b.encode(UNSEEN + CORPUS[2]):
        raise CheckFailed("training twice on the same texts gave two different tokenizers: break ties by a fixed order")
    return ""


def _tokenizer_training_step(registry: Registry, info: ComponentInfo) -> str:
    from gptf.data import Sample, encode_sample

    tokenizer = _new_tokenizer(registry, info)
    encoded = encode_sample(tokenizer, Sample("什么是词元？", "词元是文本切分后的最小单位。"))
    ids = torch.tensor([encoded.ids[: TINY_MODEL["seq_len"]]])
    torch.manual_seed(0)
    model = builtin_model(tokenizer.vocab_size)
    loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    if not torch.isfinite(loss):
        raise CheckFailed(f"the loss on its ids is {loss.item()}")
    return f"a sample is {ids.shape[1]} tokens; loss {loss.item():.3f}"


TOKENIZER_CHECKS = [
    ("builds", _tokenizer_builds),
    ("encode/decode", _tokenizer_roundtrip),
    ("save/load", _tokenizer_save_load),
    ("deterministic", _tokenizer_deterministic),
    ("training step", _tokenizer_training_step),
]


def _builtins() -> Registry:
    return Registry(load_plugins([], entry_points=False))


def builtin_model(vocab: int = VOCAB) -> nn.Module:
    """The tiny model with built-in parts only, for kinds that are not model parts."""
    return build_model(recipe_from_dict({"name": "plugin_check", "model": TINY_MODEL}), _builtins(), vocab)


# ------------------------------------------------------------------ schedulers and optimizers


def _schedule_values(registry: Registry, info: ComponentInfo) -> list[float]:
    schedule = registry.build("scheduler", info.name, {}, "training.scheduler", max_steps=100)
    return [schedule(step) for step in range(100)]


def _scheduler_shapes(registry: Registry, info: ComponentInfo) -> str:
    values = _schedule_values(registry, info)
    bad = next(
        (i for i, v in enumerate(values) if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0), None
    )
    if bad is not None:
        raise CheckFailed(f"at step {bad} it returned {values[bad]!r}; a schedule returns a number >= 0 per step")
    if max(values) <= 0:
        raise CheckFailed("it returns 0 at every step, so the model would never learn")
    return f"multiplier of training.lr: step 0 {values[0]:.3g}, step 50 {values[50]:.3g}, step 99 {values[99]:.3g}"


def _scheduler_deterministic(registry: Registry, info: ComponentInfo) -> str:
    if _schedule_values(registry, info) != _schedule_values(registry, info):
        raise CheckFailed("two schedules built the same way give different values")
    return ""


def _optimizer_run(registry: Registry, info: ComponentInfo, lr: float, steps: int = 1) -> tuple[nn.Module, float]:
    torch.manual_seed(0)
    model = builtin_model()
    groups = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.01},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = registry.build("optimizer", info.name, {}, "training.optimizer", params=groups, lr=lr)
    ids = random_ids(batch=4)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr  # the engine sets the group lr every step
        optimizer.zero_grad()
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
    return model, loss.item()


def _optimizer_step(registry: Registry, info: ComponentInfo) -> str:
    model, first = _optimizer_run(registry, info, 1e-3, steps=3)
    if not math.isfinite(first) or not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckFailed("after a few steps the weights or the loss are not finite numbers")
    still, _ = _optimizer_run(registry, info, 0.0)
    start, _ = _optimizer_run(registry, info, 1e-3, steps=0)
    if any(not torch.equal(a, b) for a, b in zip(still.parameters(), start.parameters(), strict=True)):
        raise CheckFailed(
            "with the group learning rate set to 0 the weights still changed: the engine sets "
            "param_groups[i]['lr'] every step from the scheduler, so the optimizer must use it"
        )
    return ""


def _optimizer_deterministic(registry: Registry, info: ComponentInfo) -> str:
    a, _ = _optimizer_run(registry, info, 1e-3, steps=2)
    b, _ = _optimizer_run(registry, info, 1e-3, steps=2)
    if any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True)):
        raise CheckFailed("two identical training runs ended with different weights")
    return ""


# ------------------------------------------------------------------ quantizers, constraints, callbacks


def _quantizer(registry: Registry, info: ComponentInfo) -> str:
    quantizer = registry.build("quantizer", info.name, {}, "quantizer")
    if quantizer is None:
        return "returns None: no quantization"
    model = builtin_model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantizer.quantize(model)
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        raise CheckFailed("quantize(model) changed the original model; it must return a copy")
    ids = random_ids()
    with torch.no_grad():
        reference, output = model(ids), quantized(ids)
    _expect_shape("the quantized model", output, tuple(reference.shape), "it must answer like the original")
    tensors = quantizer.state_tensors(quantized)
    if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise CheckFailed("state_tensors must return a dict of plain tensors (for a safetensors file)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "q.safetensors"
        safetensors.torch.save_file({k: t.contiguous() for k, t in tensors.items()}, str(path))
        skeleton = builtin_model()
        reloaded = quantizer.load(skeleton, safetensors.torch.load_file(str(path)))
    with torch.no_grad():
        again = reloaded.eval()(ids)
    if not torch.allclose(output, again, atol=1e-5):
        raise CheckFailed("the quantized model rebuilt with load(state_tensors) answers differently")
    error = float((reference - output).abs().max())
    return f"largest logit change vs fp32: {error:.3g}"


def _constraint(registry: Registry, info: ComponentInfo) -> str:
    from gptf.generate import DecodingState

    tokenizer = _builtin_char_tokenizer()
    constraint = registry.build("decoding_constraint", info.name, {}, "generation.constraints[0]", tokenizer=tokenizer)
    logits = torch.randn(tokenizer.vocab_size, generator=torch.Generator().manual_seed(0))
    state = DecodingState(tokenizer, tokenizer.encode("用户:你好\n助手:"), tokenizer.encode("你好。"))
    adjusted = constraint.adjust_logits(logits.clone(), state)
    _expect_shape("adjust_logits", adjusted, tuple(logits.shape), "it returns one score per token")
    if torch.isnan(adjusted).any() or bool(torch.isinf(adjusted).all()):
        raise CheckFailed("adjust_logits returned NaN, or banned every token (nothing left to choose)")
    if not torch.equal(adjusted, constraint.adjust_logits(logits.clone(), state)):
        raise CheckFailed("adjust_logits gave two different answers for the same state: it must be deterministic")
    stop = constraint.should_stop(state)
    if not isinstance(stop, bool):
        raise CheckFailed(f"should_stop must return True or False, got {stop!r}")
    return ""


def _answer_filter(registry: Registry, info: ComponentInfo) -> str:
    from gptf.interfaces import FinishedAnswer

    tokenizer = _builtin_char_tokenizer()
    where = "generation.answer_filter"
    answer_filter = registry.build("answer_filter", info.name, {}, where, tokenizer=tokenizer)
    if answer_filter is None:
        return "returns None: every answer is shown"
    if "threshold" not in info.parameters() and not info.accepts_any():
        raise CheckFailed("the factory must accept a 'threshold: float' parameter (gptf eval --calibrate sets it)")
    sure = FinishedAnswer("你好", "你好。", (1, 2, 3), (-0.01, -0.02, -0.01), (0.05, 0.1, 0.05))
    unsure = FinishedAnswer("你好", "乱码。", (4, 5, 6), (-3.0, -4.0, -2.5), (3.0, 3.5, 2.8))
    confidences = [answer_filter.confidence(a) for a in (sure, unsure)]
    if not all(isinstance(c, (int, float)) and not math.isnan(c) for c in confidences):
        raise CheckFailed(f"confidence() must return a number, got {confidences!r}")
    if confidences != [answer_filter.confidence(a) for a in (sure, unsure)]:
        raise CheckFailed("confidence() gave two different values for the same answer: it must be deterministic")
    for c in confidences:
        if not isinstance(answer_filter.keep(c), bool):
            raise CheckFailed("keep(confidence) must return True or False")
    reply = getattr(answer_filter, "reply", None)
    if not isinstance(reply, str) or not reply.strip():
        raise CheckFailed("the filter needs a non-empty 'reply': what is said instead of an unsure answer")
    low = registry.build("answer_filter", info.name, {"threshold": -1e9}, where, tokenizer=tokenizer)
    high = registry.build("answer_filter", info.name, {"threshold": 1e9}, where, tokenizer=tokenizer)
    if not (low.keep(confidences[1]) and not high.keep(confidences[0])):
        raise CheckFailed("keep() must follow the threshold: a very low one keeps every answer, a very high one none")
    return f"confidence {confidences[0]:.3g} for a sure answer, {confidences[1]:.3g} for an unsure one"


def _builtin_char_tokenizer() -> Any:
    tokenizer = _builtins().build("tokenizer", "char", {}, "tokenizer.type", vocab_size=TOKENIZER_VOCAB)
    tokenizer.train(iter(CORPUS))
    return tokenizer


def _callback(registry: Registry, info: ComponentInfo) -> str:
    from gptf.data import TokenizedSplit
    from gptf.recipe import TrainingConfig
    from gptf.train.trainer import Trainer

    def train(callbacks: list[Any]) -> tuple[nn.Module, float | None]:
        torch.manual_seed(0)
        model = builtin_model()
        rows = [random_ids(batch=1, seed=s)[0] for s in range(8)]
        split = TokenizedSplit([r[:-1] for r in rows], [r[1:] for r in rows], 0, 0)
        config = TrainingConfig(max_steps=2, batch_size=4, micro_batch=4, eval_interval=1, log_interval=1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        trainer = Trainer(config=config, model=model, train=split, val=split, pad_id=0, optimizer=optimizer,
                          schedule=lambda step: 1.0, callbacks=callbacks)  # fmt: skip
        state = trainer.fit()
        return model, state.train_loss

    callback = registry.build("callback", info.name, {}, "training.callbacks[0]")
    with_it, loss = train([callback])
    without, _ = train([])
    if loss is None or not math.isfinite(loss):
        raise CheckFailed(f"with the callback the training loss is {loss}")
    if any(not torch.equal(a, b) for a, b in zip(with_it.parameters(), without.parameters(), strict=True)):
        raise CheckFailed("training with the callback ends with different weights than without: callbacks may read "
                          "the trainer but must not change the update")  # fmt: skip
    return "2 training steps, same weights as without it"


CHECKS_BY_KIND: dict[str, list[tuple[str, Callable[[Registry, ComponentInfo], str | None]]]] = {
    "positional": WITH_KV_CACHE,
    "attention": WITH_KV_CACHE,
    "norm": MODEL_CHECKS,
    "mlp": MODEL_CHECKS,
    "block": WITH_KV_CACHE,
    "tokenizer": TOKENIZER_CHECKS,
    "scheduler": [("values", _scheduler_shapes), ("deterministic", _scheduler_deterministic)],
    "optimizer": [("training step", _optimizer_step), ("deterministic", _optimizer_deterministic)],
    "quantizer": [("quantize/save/load", _quantizer)],
    "decoding_constraint": [("adjust/stop", _constraint)],
    "answer_filter": [("confidence/threshold", _answer_filter)],
    "callback": [("training step", _callback)],
}
