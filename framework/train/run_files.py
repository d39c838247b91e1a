"""A run directory: everything needed to rebuild and question a trained model.

    checkpoints/<name>/
      recipe.yaml              the fully resolved recipe
      tokenizer.json           the tokenizer the model was trained with
      model.safetensors        fp32 weights (safetensors: plain tensors, no code runs on load)
      model.int8.safetensors   quantized weights (when the recipe's quantizer made them)
      metrics.jsonl            one JSON line per log/eval step
      metrics.in-progress.jsonl
                               the same lines while a run trains; renamed to metrics.jsonl once its
                               weights are saved, so an older run's metrics stay beside its weights until then
      run.json                 fingerprints, plugins, timings, final losses; written last, with the
                               sha256 of the model's files (checked on load: gptf.train.fingerprints)
      state/                   resumable checkpoints while training (gptf.train.checkpoint); gone once finished
      .gptf.lock               while a run writes the folder (gptf.train.lock)

Every file is written to a temporary name first and then renamed, so an interrupted
save never leaves a half-written file behind. A write that fails (disk full) raises an
:class:`OSError` naming the file, whichever library did the writing.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import safetensors.torch
import torch
import yaml
from safetensors import SafetensorError

from gptf.errors import CheckpointError, closest_path, shown

RECIPE = "recipe.yaml"
TOKENIZER = "tokenizer.json"
WEIGHTS = "model.safetensors"
QUANTIZED = "model.int8.safetensors"
METRICS = "metrics.jsonl"
METRICS_IN_PROGRESS = "metrics.in-progress.jsonl"
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
    except OSError as exc:  # name the file being written, not its temporary name
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_error(exc: SafetensorError, path: Path) -> OSError:
    """safetensors reports a failed write as ``SafetensorError(... Os { code: 28 ...})``: the OSError it is."""
    found = re.search(r"(?:os error|code:) ?(\d+)", str(exc))
    number = int(found.group(1)) if found else errno.EIO
    return OSError(number, os.strerror(number), str(path))


def _save_safetensors(save: Callable[[str], None], path: Path) -> None:
    try:
        save(str(path))
    except SafetensorError as exc:
        raise write_error(exc, path) from exc


def save_torch_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory: the file is then written by plain Python, whose errors are clear."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


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
    atomic_write(path, lambda tmp: _save_safetensors(lambda name: safetensors.torch.save_model(model, name), tmp))


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
    atomic_write(path, lambda tmp: _save_safetensors(lambda name: safetensors.torch.save_file(tensors, name), tmp))


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
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:  # a failed write does not say which file: say it
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


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
    def metrics_in_progress(self) -> Path:
        """Where a training run logs until it is saved (then :meth:`publish_metrics` moves it)."""
        return self.root / METRICS_IN_PROGRESS

    def publish_metrics(self) -> None:
        """The new weights are saved: their training's metrics take the place of the old run's."""
        if self.metrics_in_progress.is_file():
            os.replace(self.metrics_in_progress, self.metrics)
        else:  # nothing was logged: the old run's numbers must not stay beside the new weights
            self.metrics.unlink(missing_ok=True)

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
        wrong = record_problems(info)
        if wrong:
            raise CheckpointError(
                f"{self.info}: not a gptf run record: " + "; ".join(wrong[:5]),
                hint="was run.json edited by hand? put the original back, or load with --no-verify",
            )
        return info

    def require(self) -> None:
        """A usable run directory has at least the recipe, tokenizer and weights."""
        if self.root.is_file():  # e.g. --ckpt checkpoints/x/model.safetensors
            in_a_run = (self.root.parent / self.recipe.name).is_file()
            raise CheckpointError(
                f"{self.root} is a file, not a run directory",
                hint=f"name the run directory that holds it: {self.root.parent}"
                if in_a_run
                else "name a run directory, e.g. checkpoints/<name>",
            )
        if not self.root.is_dir():
            close = closest_path(self.root, lambda p: (p / WEIGHTS).is_file() and (p / RECIPE).is_file())
            raise CheckpointError(
                f"run directory not found: {self.root}",
                hint=f"did you mean {close}?"
                if close is not None
                else "train first with 'gptf run RECIPE', or point --ckpt at checkpoints/<name>",
            )
        missing = [p.name for p in (self.recipe, self.tokenizer, self.weights) if not p.is_file()]
        if missing:
            raise CheckpointError(
                f"{self.root} is not a finished gptf run: missing {', '.join(missing)}",
                hint="was training interrupted before the first save? run it again",
            )


# --------------------------------------------------------------- what run.json holds


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional_number(value: Any) -> bool:
    return value is None or _number(value)


def _str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _tokenizer_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("sha256", ""), str)
        and (value.get("vocab_size") is None or _count(value.get("vocab_size")))
    )


def _plugin_records(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(r, dict) and all(v is None or isinstance(v, str) for v in r.values()) for r in value
    )


def _file_records(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(name, str)
        and isinstance(r, dict)
        and _count(r.get("bytes"))
        and isinstance(r.get("sha256"), str)
        and re.fullmatch(r"[0-9a-f]{64}", r["sha256"]) is not None
        for name, r in value.items()
    )


#: Each key of run.json that gptf reads, and what its value must be.
RECORD_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "parameters": (_count, "a whole number >= 0"),
    "steps": (_count, "a whole number >= 0"),
    "tokens_seen": (_count, "a whole number >= 0"),
    "train_seconds": (_number, "a number"),
    "final_train_loss": (_optional_number, "a number or null"),
    "final_val_loss": (_optional_number, "a number or null"),
    "best_val_loss": (_optional_number, "a number or null"),
    "tokenizer": (_tokenizer_record, 'an object {"vocab_size": int, "sha256": str}'),
    "components": (_str_dict, "an object of strings"),
    "plugins": (_plugin_records, "a list of objects"),
    "data": (_str_dict, "an object of strings"),
    "demo": (lambda v: isinstance(v, list), "a list"),
    "files": (_file_records, 'an object {"<file>": {"bytes": int, "sha256": "<64 hex digits>"}}'),
}


def record_problems(info: dict[str, Any]) -> list[str]:
    """``key: expected ..., got ...`` for each field of a run record with the wrong type."""
    return [
        f"{key}: expected {description}, got {shown(info[key])}"
        for key, (fits, description) in RECORD_FIELDS.items()
        if key in info and not fits(info[key])
    ]
