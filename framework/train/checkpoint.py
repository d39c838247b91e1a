"""Resumable checkpoints: everything needed to continue training exactly where it stopped.

    checkpoints/<name>/state/
      step-000040/               one complete checkpoint (only the newest is kept)
        model.safetensors        the weights (safetensors: plain tensors, no code runs on load)
        optimizer.pt             AdamW's moments; read back with torch.load(weights_only=True)
        rng.pt                   the random generators (torch and Python)
        trainer.json             step, losses so far, tokens seen, training time
        recipe.yaml              the resolved recipe the run was started with
        tokenizer.json           a copy of the tokenizer the ids were made with
        metrics.jsonl            the metrics logged up to this step
        manifest.json            written last: format, step, each file's size and sha256
      .incomplete-step-000060-*/ a save in progress (or killed mid-way): never used

The data order needs no saving: step ``s`` always reads the same samples
(:func:`gptf.data.sample_stream`), and the learning-rate schedule is a function of ``s``.

Why a kill at any moment is safe: a checkpoint is written into an ``.incomplete-*``
folder, its manifest last, and only then renamed to ``step-NNNNNN`` (a rename is atomic).
The older checkpoint is removed only after the new one is in place, so there is always
one complete checkpoint; loading picks the newest folder that has a manifest and checks
every file against the sha256 recorded in it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import random
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml

from gptf.errors import CheckpointError, RecipeError, shown
from gptf.recipe import parse_yaml
from gptf.train.run_files import file_sha256, load_weights, save_torch_bytes, save_weights

STATE_DIR = "state"
MANIFEST = "manifest.json"
FORMAT = "gptf-resume/1"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
RNG = "rng.pt"
TRAINER = "trainer.json"
RECIPE = "recipe.yaml"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"

_STEP_DIR = re.compile(r"^step-(\d+)$")
_INCOMPLETE = ".incomplete-"
_DISCARDED = ".discarded-"


@attrs.frozen
class Checkpoint:
    """One complete resumable checkpoint on disk."""

    path: Path
    step: int
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


def state_dir(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_DIR


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


# ------------------------------------------------------------------------- saving


def save_checkpoint(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: Any,
    recipe: Mapping[str, Any],
    tokenizer_path: Path,
    data_hashes: Mapping[str, Mapping[str, str]],
    metrics_path: Path | None = None,
    world_size: int = 1,
) -> Checkpoint:
    """Write a complete checkpoint for ``train_state.step`` and make it the newest one.

    ``data_hashes`` maps a recipe key (``data.train``) to ``{"path", "sha256"}``; it is
    checked again when resuming, so a changed data file is noticed. ``world_size``: how many
    processes trained it (torchrun); resuming with another number differs by rounding only.
    """
    folder = state_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    step = int(train_state.step)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_INCOMPLETE}{step_dir_name(step)}-", dir=folder))
    try:
        _write_payload(tmp, model, optimizer, train_state, recipe, tokenizer_path, metrics_path)
        manifest = {
            "format": FORMAT,
            "step": step,
            "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "world_size": world_size,
            "tokenizer": {"path": str(tokenizer_path), "sha256": file_sha256(tmp / TOKENIZER)},
            "data": {key: dict(value) for key, value in data_hashes.items()},
            "files": {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir())},
        }
        _write_synced(tmp / MANIFEST, (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode())
        _fsync_dir(tmp)
        final = folder / step_dir_name(step)
        if final.exists():  # the same step saved again (e.g. interrupted right after resuming)
            _discard(final)
        os.rename(tmp, final)  # the moment the new checkpoint exists, complete
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _step_dirs(folder):
        if old != final:
            _discard(old)
    _remove_leftovers(folder)
    return Checkpoint(final, step, manifest)


def _write_payload(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: Any,
    recipe: Mapping[str, Any],
    tokenizer_path: Path,
    metrics_path: Path | None,
) -> None:
    save_weights(model, folder / WEIGHTS)
    _save_torch(optimizer.state_dict(), folder / OPTIMIZER)
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    _save_torch(rng, folder / RNG)
    trainer = {"train_state": attrs.asdict(train_state)}
    _write_synced(folder / TRAINER, (json.dumps(trainer, indent=2) + "\n").encode())
    _write_synced(folder / RECIPE, yaml.safe_dump(dict(recipe), allow_unicode=True, sort_keys=False).encode())
    _write_synced(folder / TOKENIZER, Path(tokenizer_path).read_bytes())
    metrics = metrics_path.read_bytes() if metrics_path is not None and metrics_path.is_file() else b""
    _write_synced(folder / METRICS, metrics)


def _save_torch(obj: Any, path: Path) -> None:
    _write_synced(path, save_torch_bytes(obj))


def _write_synced(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # a failed write does not say which file: say it
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    """Remove a checkpoint folder: first renamed away (atomic), then deleted."""
    trash = path.with_name(f"{_DISCARDED}{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Delete what earlier killed saves left behind (never a complete checkpoint)."""
    for path in folder.iterdir():
        if path.name.startswith((_INCOMPLETE, _DISCARDED)):
            shutil.rmtree(path, ignore_errors=True)


def remove_checkpoints(run_dir: Path) -> None:
    """Forget every resumable checkpoint of a run (done once the run has finished)."""
    folder = state_dir(run_dir)
    if folder.is_dir():
        for path in _step_dirs(folder):
            _discard(path)
        _remove_leftovers(folder)
        with contextlib.suppress(OSError):  # something else lives there: leave it
            folder.rmdir()


# ------------------------------------------------------------------------ finding


def _step_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of a run, or None. Incomplete saves are ignored."""
    for path in reversed(_step_dirs(state_dir(run_dir))):
        manifest = _read_manifest(path)
        if manifest is not None:
            return Checkpoint(path, int(manifest["step"]), manifest)
    return None


def incomplete_saves(run_dir: Path) -> list[Path]:
    folder = state_dir(run_dir)
    return sorted(p for p in folder.iterdir() if p.name.startswith(_INCOMPLETE)) if folder.is_dir() else []


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a checkpoint folder, or None if the folder is not a complete checkpoint."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("step"), int):
        return None
    if not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def find_checkpoint(run_dir: Path) -> Checkpoint:
    """The checkpoint ``gptf run --resume`` continues from; a clear error if there is none.

    ``run_dir`` may also be the ``state`` folder or one ``step-NNNNNN`` folder in it.
    """
    run_dir = Path(run_dir)
    if _STEP_DIR.match(run_dir.name) and run_dir.parent.name == STATE_DIR:
        manifest = _read_manifest(run_dir)
        if manifest is None:
            raise CheckpointError(f"{run_dir}: not a complete resumable checkpoint (no valid {MANIFEST})")
        return Checkpoint(run_dir, int(manifest["step"]), manifest)
    if run_dir.name == STATE_DIR and not (run_dir / STATE_DIR).exists():
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise CheckpointError(
            f"cannot resume: run directory not found: {run_dir}",
            hint="start the run without --resume, or name the run directory: --resume checkpoints/<name>",
        )
    found = latest_checkpoint(run_dir)
    if found is not None:
        return found
    note = ""
    if incomplete_saves(run_dir):
        note = " (only a save that was cut off, which is never used)"
    elif (run_dir / "run.json").is_file():
        note = " (the run finished: its weights are in place)"
    raise CheckpointError(
        f"cannot resume: {state_dir(run_dir)} has no complete checkpoint{note}",
        hint="start again without --resume; set training.save_interval to save checkpoints while training",
    )


# ------------------------------------------------------------------------ loading


def verify_files(checkpoint: Checkpoint) -> None:
    """Every file the manifest lists is present with the recorded size and sha256."""
    for name, record in checkpoint.manifest["files"].items():
        path = checkpoint.file(name)
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint (listed in its {MANIFEST})")
        size = path.stat().st_size
        if not isinstance(record, dict) or size != record.get("bytes") or file_sha256(path) != record.get("sha256"):
            raise CheckpointError(
                f"{path}: corrupt (its size or sha256 differs from {checkpoint.file(MANIFEST)}: "
                f"truncated or changed after it was saved)",
                hint="delete this checkpoint folder and start the run again",
            )


def load_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never code."""
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch state file ({first})") from exc


def read_recipe(checkpoint: Checkpoint) -> dict[str, Any]:
    """The recipe a checkpoint was saved with, read as safely as any recipe (no alias bombs)."""
    path = checkpoint.file(RECIPE)
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable recipe ({exc})") from exc
    except RecipeError as exc:
        raise CheckpointError(f"{path}: unreadable recipe ({'; '.join(exc.problems)})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a recipe (expected a mapping of keys)")
    return data


def restore(
    checkpoint: Checkpoint,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: Any,
    metrics_path: Path | None = None,
    max_steps: int | None = None,
) -> None:
    """Load a checkpoint into freshly built objects (same recipe) so training continues exactly.
    ``max_steps``: the run's; a checkpoint past it is refused (its state would make no sense)."""
    verify_files(checkpoint)
    load_weights(model, checkpoint.file(WEIGHTS))
    optimizer_state = load_torch_file(checkpoint.file(OPTIMIZER))
    try:
        optimizer.load_state_dict(optimizer_state)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"{checkpoint.file(OPTIMIZER)}: does not fit the optimizer built from the recipe ({exc})"
        ) from exc
    rng = load_torch_file(checkpoint.file(RNG))
    try:
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint.file(RNG)}: not a gptf random-generator state ({exc})") from exc
    _restore_train_state(checkpoint.file(TRAINER), train_state, checkpoint.step, max_steps)
    if metrics_path is not None:
        metrics = checkpoint.file(METRICS)
        if metrics.is_file():
            tmp = metrics_path.with_name(f".{metrics_path.name}.resume.tmp")
            shutil.copyfile(metrics, tmp)
            os.replace(tmp, metrics_path)


def _restore_train_state(path: Path, train_state: Any, step: int, max_steps: int | None) -> None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["train_state"]
        names = {f.name for f in attrs.fields(type(train_state))}
        if not isinstance(saved, dict) or set(saved) != names:
            raise ValueError(f"expected the fields {sorted(names)}")
        wrong = [f"{name}: {problem}" for name, value in saved.items() if (problem := _state_problem(name, value))]
        if wrong:
            raise ValueError("; ".join(wrong))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a gptf trainer state ({exc})") from exc
    if saved["step"] != step:
        raise CheckpointError(f"{path}: says step {saved['step']}, but its {MANIFEST} says step {step}")
    if max_steps is not None and step > max_steps:
        raise CheckpointError(
            f"{path.parent}: the checkpoint is at step {step}, past training.max_steps={max_steps}",
            hint=f"resume with training.max_steps={step} or more (and --force), or start a new run",
        )
    for name, value in saved.items():
        setattr(train_state, name, value)


def _state_problem(name: str, value: Any) -> str | None:
    """What is wrong with one saved trainer-state field (the fields of TrainState)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    number = (whole or isinstance(value, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name in ("step", "tokens_seen"):
        ok = whole and 0 <= value < 2**63
        return None if ok else f"expected a whole number >= 0, got {shown(value)}"
    if name == "elapsed_s":
        return None if number and value >= 0 else f"expected a number >= 0, got {shown(value)}"
    if name.endswith("loss"):  # only reported, never computed with: any float will do
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        return None if ok else f"expected a number or null, got {shown(value)}"
    return None
