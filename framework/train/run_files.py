"""A run directory: everything needed to rebuild and question a trained model.

    checkpoints/<name>/
      recipe.yaml              the fully resolved recipe
      tokenizer.json           the tokenizer the model was trained with
      model.safetensors        fp32 weights (safetensors: plain tensors, no code runs on load)
      model.int8.safetensors   quantized weights (when the recipe's quantizer made them)
      metrics.jsonl            one JSON line per log/eval step
      run.json                 fingerprints, plugins, timings, final losses
      state/                   resumable checkpoints while training (gptf.train.checkpoint); gone once finished

Every file is written to a temporary name first and then renamed, so an interrupted
save never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import safetensors.torch
import torch
import yaml
from safetensors import SafetensorError

from gptf.errors import CheckpointError

RECIPE = "recipe.yaml"
TOKENIZER = "tokenizer.json"
WEIGHTS = "model.safetensors"
QUANTIZED = "model.int8.safetensors"
METRICS = "metrics.jsonl"
INFO = "run.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Save a model's weights; tied tensors (embedding = output layer) are stored once."""
    atomic_write(path, lambda tmp: safetensors.torch.save_model(model, str(tmp)))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors weights file ({exc})") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the model built from the recipe "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return safetensors.torch.load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


@attrs.frozen
class RunFiles:
    """Paths inside one run directory."""

    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    @property
    def quantized(self) -> Path:
        return self.root / QUANTIZED

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def info(self) -> Path:
        return self.root / INFO

    def read_info(self) -> dict[str, Any]:
        if not self.info.is_file():
            return {}
        try:
            info = json.loads(self.info.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.info}: unreadable run record ({exc})") from exc
        if not isinstance(info, dict):
            raise CheckpointError(f"{self.info}: not a gptf run record (expected a JSON object)")
        return info

    def require(self) -> None:
        """A usable run directory has at least the recipe, tokenizer and weights."""
        if not self.root.is_dir():
            raise CheckpointError(
                f"run directory not found: {self.root}",
                hint="train first with 'gptf run RECIPE', or point --ckpt at checkpoints/<name>",
            )
        missing = [p.name for p in (self.recipe, self.tokenizer, self.weights) if not p.is_file()]
        if missing:
            raise CheckpointError(
                f"{self.root} is not a finished gptf run: missing {', '.join(missing)}",
                hint="was training interrupted before the first save? run it again",
            )
