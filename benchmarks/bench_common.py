"""What the benchmark scripts share: the data sets, building gptf's trainer from the teacher
recipe, a GEMM peak measured in the same run, interleaved timing, and JSON output.

Timings on a shared or busy machine are noisy, so every script measures its contenders
*side by side in one process*, interleaved in small chunks, and reports medians and ratios.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from gptf.build.components import build_model, build_optimizer, build_scheduler, new_tokenizer, registry_for
from gptf.data import Sample, TokenizedSplit, read_jsonl, tokenize_split, training_texts
from gptf.interfaces import Tokenizer
from gptf.recipe import Recipe, load_recipe
from gptf.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TEACHER_RECIPE = ROOT / "recipes" / "teacher_3m.yaml"
PEER_DIR = ROOT.parent / "shared" / "peer" / "gpt_teacher_seed"
PEER_TARGET = 0.4243  # the original release's final validation loss after its 2000 steps (751 s here)


@attrs.frozen
class Dataset:
    """Train/val samples and the tokenizer that goes with them."""

    name: str
    train: list[Sample]
    val: list[Sample]
    tokenizer: Tokenizer
    tokenizer_path: Path | None  # None: trained in memory for this run


def recipe_tokenizer(recipe: Recipe, registry: Any, train: Sequence[Sample]) -> Tokenizer:
    """The recipe's tokenizer file if it exists, else one trained in memory on ``train``
    (as ``gptf run`` would, but nothing is written to the repository)."""
    tokenizer = new_tokenizer(recipe, registry)
    path = ROOT / recipe.tokenizer.path
    if path.is_file():
        tokenizer.load(path)
    else:
        tokenizer.train(training_texts(train))
    return tokenizer


def our_data(overrides: Sequence[str] = ()) -> Dataset:
    """The project's data (data/train.jsonl, data/val.jsonl) and the teacher recipe's tokenizer,
    with the recipe's prompt augmentation applied to the training samples, as ``gptf run`` does.

    The tokenizer file is used when it exists; otherwise one is trained in memory, as
    ``gptf run`` would, but nothing is written to the repository."""
    loaded = load_recipe(TEACHER_RECIPE, list(overrides))
    recipe = loaded.recipe
    registry = registry_for(loaded)
    train = read_jsonl(ROOT / recipe.data.train)
    val = read_jsonl(ROOT / (recipe.data.val or "data/val.jsonl"))
    tokenizer = recipe_tokenizer(recipe, registry, train)
    path = ROOT / recipe.tokenizer.path
    copies = getattr(recipe.data, "augment_copies", 0)
    if copies:  # after the tokenizer, as in gptf run
        from gptf.data import augment_prompts

        train = augment_prompts(train, copies, recipe.training.seed)
    return Dataset("ours", train, val, tokenizer, path if path.is_file() else None)


def peer_data() -> Dataset | None:
    """The original release's data and tokenizer, or None when ../shared is not there."""
    if not (PEER_DIR / "train.jsonl").is_file():
        return None
    loaded = load_recipe(TEACHER_RECIPE)
    tokenizer = new_tokenizer(loaded.recipe, registry_for(loaded))
    tokenizer.load(PEER_DIR / "tokenizer.json")
    return Dataset("peer", read_jsonl(PEER_DIR / "train.jsonl"), read_jsonl(PEER_DIR / "val.jsonl"), tokenizer, None)


def teacher_recipe(overrides: Sequence[str] = ()) -> Recipe:
    return load_recipe(TEACHER_RECIPE, list(overrides)).recipe


@attrs.define
class GptfSetup:
    recipe: Recipe
    trainer: Trainer
    train: TokenizedSplit
    val: TokenizedSplit


def gptf_trainer(data: Dataset, overrides: Sequence[str] = ()) -> GptfSetup:
    """gptf's trainer for the teacher recipe (plus ``overrides``) on ``data``: what ``gptf run`` builds."""
    loaded = load_recipe(TEACHER_RECIPE, list(overrides))
    recipe = loaded.recipe
    registry = registry_for(loaded)
    seq_len = recipe.model.seq_len
    train = tokenize_split(data.train, data.tokenizer, seq_len, truncate=True, source=f"{data.name} train")
    val = tokenize_split(data.val, data.tokenizer, seq_len, truncate=True, source=f"{data.name} val")
    torch.manual_seed(recipe.training.seed)
    model = build_model(recipe, registry, data.tokenizer.vocab_size)
    trainer = Trainer(
        config=recipe.training,
        model=model,
        train=train,
        val=val,
        pad_id=data.tokenizer.pad_id,
        optimizer=build_optimizer(recipe, registry, model),
        schedule=build_scheduler(recipe, registry),
    )
    return GptfSetup(recipe, trainer, train, val)


def gemm_peak_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 0.5) -> float:
    """The best rate of an (n x n) @ (n x n) matmul here: the ceiling for dense work."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def interleaved(contenders: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Call each contender ``per_round`` times, in turn, for ``rounds`` rounds; seconds per call.

    Interleaving spreads a busy neighbour's load over every contender instead of one."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            for _ in range(per_round):
                started = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1e3, 2),
        "best_ms": round(min(seconds) * 1e3, 2),
        "mean_ms": round(statistics.fmean(seconds) * 1e3, 2),
    }


def set_threads(threads: int | None) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1m": round(load[0], 2) if load else None,
    }


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, ensure_ascii=False, indent=2))
