"""Training that nothing can take away: Ctrl+C, a closed terminal, ``kill -9``, NaN.

:class:`TrainingSession` wraps :meth:`gptf.train.trainer.Trainer.fit` in ``gptf run``:

* Ctrl+C (SIGINT), SIGTERM or a closed terminal (SIGHUP) only *asks* the trainer to stop:
  the current step finishes, a resumable checkpoint is saved, and the run ends with a
  message saying how to continue (``gptf run RECIPE --resume``). A second Ctrl+C quits
  at once, keeping the previous checkpoint.
* Every ``training.save_interval`` steps a checkpoint is saved, so even ``kill -9`` or
  a power cut loses at most that many steps (see :mod:`gptf.train.checkpoint` for why a kill
  in the middle of a save is harmless). A session made with ``periodic=False`` skips them
  (``gptf ablate``: an unfinished ablation run is trained again from the start).
* A NaN/inf loss stops training (the trainer raises :class:`TrainingStopped`); the last
  good checkpoint is kept and the message says where it is. Weights that are not finite
  are never saved over a good checkpoint.
* A write that fails (disk full, quota, a folder gone read-only), whether a periodic
  checkpoint, the metrics or the finished run's files, never loses the training:
  :meth:`TrainingSession.rescue` saves a resumable checkpoint of the current step in the run
  folder or, if that fails too, in a rescue folder in the system's temp folder, keeps the
  last good checkpoint, and stops with the file that failed, why, and how to continue.

Under torchrun (:mod:`gptf.train.distributed`) every process catches the signals, the
processes agree to stop after the same step, and rank 0 alone writes the checkpoints; on
``--resume`` every process reads the same checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import torch
from rich.console import Console

from gptf.errors import CheckpointError, GptfError, Interrupted, SaveFailed, TrainingStopped, os_error_text
from gptf.recipe import LoadedRecipe
from gptf.train.checkpoint import (
    Checkpoint,
    find_checkpoint,
    latest_checkpoint,
    read_recipe,
    remove_checkpoints,
    restore,
    save_checkpoint,
)
from gptf.train.fingerprints import (
    check_tokenizer_unchanged,
    data_differences,
    data_fingerprints,
    recipe_differences,
    training_data,
)
from gptf.train.run_files import RunFiles
from gptf.train.trainer import Trainer

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def resume_command(loaded: LoadedRecipe, run_dir: Path) -> str:
    """The command that continues this run, e.g. ``gptf run recipes/x.yaml lr=1 --resume``."""
    parts = ["gptf", "run", _shown_path(loaded.chain[0]), *loaded.overrides, "--resume"]
    if Path(run_dir).resolve() != loaded.recipe.run_dir.resolve():
        parts.append(str(run_dir))
    return shlex.join(parts)


def finished_run_note(files: RunFiles) -> str:
    """What a new run is about to do to the finished run already in its folder: replace it at its end."""
    try:
        steps = files.read_info().get("steps")
    except GptfError:
        steps = None
    what = f"a finished run ({steps} steps)" if isinstance(steps, int) else "a finished run"
    return (
        f"{files.root} holds {what}; this new run replaces it when it finishes (until then gptf generate, chat and "
        f"serve keep answering with it). To keep it: Ctrl+C now and copy the folder, or add name=<another name>"
    )


def _shown_path(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def open_resume(
    run_dir: Path,
    loaded: LoadedRecipe,
    recipe_data: dict[str, Any],
    *,
    force: bool,
    console: Console,
    world_size: int = 1,
) -> Checkpoint:
    """Find the checkpoint to continue from and refuse (unless ``force``) if what the model
    would learn has changed since: recipe settings or data files. ``world_size``: how many
    processes train now (torchrun), to say when the numbers will differ by rounding."""
    checkpoint = find_checkpoint(run_dir)
    differences = recipe_differences(read_recipe(checkpoint), recipe_data)
    differences += data_differences(checkpoint.manifest.get("data") or {}, data_fingerprints(training_data(loaded)))
    if differences and not force:
        listed = "\n".join(f"  - {d}" for d in differences)
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: {len(differences)} setting(s) differ from the run "
            f"it was saved by:\n{listed}",
            hint="undo the change, or add --force to continue anyway (the result will then differ "
            "from an uninterrupted run)",
        )
    for line in differences:
        console.print(f"[yellow]warning (--force): {line}[/]", highlight=False)
    tokenizer_path = Path(loaded.recipe.tokenizer.path)
    if tokenizer_path.is_file():  # (if it is missing, it is retrained and checked after that)
        check_tokenizer_unchanged(checkpoint, tokenizer_path)
    saved_threads = checkpoint.manifest.get("threads")
    threads = loaded.recipe.training.threads or torch.get_num_threads()
    if saved_threads is not None and saved_threads != threads:
        console.print(
            f"[yellow]note: the checkpoint was trained with {saved_threads} threads, now {threads}: "
            "the weights will not be bit-identical to an uninterrupted run[/]"
        )
    saved_world = checkpoint.manifest.get("world_size", 1)
    if saved_world != world_size:
        console.print(
            f"[yellow]note: the checkpoint was trained by {saved_world} process(es), now {world_size}: the same "
            "batches, summed in another order, so the weights will differ from an uninterrupted run by rounding[/]"
        )
    return checkpoint


class TrainingSession:
    """Signals, periodic and final checkpoints, and clear messages around one ``fit``."""

    def __init__(
        self,
        *,
        trainer: Trainer,
        loaded: LoadedRecipe,
        files: RunFiles,
        recipe_data: dict[str, Any],
        console: Console,
        resume_from: Checkpoint | None = None,
        periodic: bool = True,
    ) -> None:
        self.trainer = trainer
        self.periodic = periodic  # a checkpoint every save_interval steps (off: only on a stop or a failed write)
        self.loaded = loaded
        self.files = files
        self.recipe_data = recipe_data
        self.console = console
        self.tokenizer_path = Path(loaded.recipe.tokenizer.path)
        self.data_hashes = data_fingerprints(training_data(loaded))
        self.last_saved: Checkpoint | None = None
        self.metrics = files.metrics_in_progress  # this run's log (metrics.jsonl once its weights are saved)
        self._previous_handlers: dict[int, Any] = {}
        if resume_from is not None:
            self._resume(resume_from)
        elif (old := latest_checkpoint(files.root)) is not None:
            console.print(
                f"[yellow]note: {files.root} holds a resumable checkpoint (step {old.step}); this new run will "
                f"replace it. To continue that one instead: Ctrl+C now, then {resume_command(loaded, files.root)}[/]",
                highlight=False,
            )
        elif files.info.is_file():
            console.print(f"[yellow]note: {finished_run_note(files)}[/]", highlight=False)

    # -- resuming ------------------------------------------------------------
    def _resume(self, checkpoint: Checkpoint) -> None:
        check_tokenizer_unchanged(checkpoint, self.tokenizer_path)
        t = self.trainer
        metrics = self.metrics if t.world.is_main else None  # rank 0 alone writes the run folder
        restore(
            checkpoint,
            model=t.model,
            optimizer=t.optimizer,
            train_state=t.state,
            metrics_path=metrics,
            max_steps=t.config.max_steps,
        )
        self.last_saved = checkpoint
        self.console.print(
            f"resumed from {checkpoint.path} at step {t.state.step} of {t.config.max_steps}", highlight=False
        )

    # -- signals -------------------------------------------------------------
    def __enter__(self) -> TrainingSession:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous_handlers[number] = signal.signal(number, self._on_signal)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers.clear()
        if isinstance(exc, OSError):  # writing the metrics or a checkpoint failed (disk full...)
            self.rescue(exc, f"training (step {self.trainer.state.step})")
        if isinstance(exc, TrainingStopped) and not isinstance(exc, (Interrupted, SaveFailed)):
            raise TrainingStopped(f"{exc.message}\n{self._last_good_note()}", hint=exc.hint) from exc

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        if self.trainer.stop_requested:  # asked twice: the user wants out now
            raise KeyboardInterrupt
        self.trainer.stop_requested = True
        name = signal.Signals(number).name
        message = f"\n{name}: stopping after this step to save a resumable checkpoint (Ctrl+C again: quit at once)\n"
        if not self.trainer.world.is_main:  # under torchrun every process gets the signal; rank 0 says so
            return
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP): saving matters more
            os.write(2, message.encode())  # not print(): safe inside a signal handler

    # -- saving --------------------------------------------------------------
    def after_step(self, inner: Callable[[dict[str, Any]], None] | None = None) -> Callable[[dict[str, Any]], None]:
        """An ``on_step`` for :meth:`Trainer.fit` that also saves every ``save_interval`` steps
        (unless the session was made with ``periodic=False``)."""
        interval = self.trainer.config.save_interval if self.periodic else 0

        def on_step(metrics: dict[str, Any]) -> None:
            if inner is not None:
                inner(metrics)
            if interval and self.trainer.state.step % interval == 0:
                self.save()

        return on_step

    def save(self) -> Checkpoint | None:
        """Save a resumable checkpoint now, unless the weights are no longer finite numbers.
        Under torchrun only rank 0 saves (every process holds the same weights)."""
        t = self.trainer
        if not t.world.is_main:
            return None
        broken = next((name for name, p in t.model.named_parameters() if not torch.isfinite(p).all()), None)
        if broken is not None:
            self.console.print(
                f"[yellow]not saving step {t.state.step}: {broken} holds NaN/inf; keeping the last good checkpoint[/]"
            )
            return None
        started = time.perf_counter()
        self.last_saved = self._save_to(self.files.root)
        self.console.print(
            f"checkpoint: step {t.state.step} -> {self.last_saved.path} ({time.perf_counter() - started:.1f}s)",
            highlight=False,
            style="dim",
        )
        return self.last_saved

    def _save_to(self, run_dir: Path) -> Checkpoint:
        t = self.trainer
        return save_checkpoint(
            run_dir,
            model=t.model,
            optimizer=t.optimizer,
            train_state=t.state,
            recipe=self.recipe_data,
            tokenizer_path=self.tokenizer_path,
            data_hashes=self.data_hashes,
            metrics_path=self.metrics if self.metrics.is_file() else None,
            world_size=t.world.size,
        )

    def rescue(self, error: OSError, during: str) -> NoReturn:
        """A write failed: keep the training (a resumable checkpoint of this step, in the run
        folder or else a rescue folder), then stop, saying what failed and how to continue."""
        t = self.trainer
        reason = os_error_text(error)
        kept: Checkpoint | None = None
        failures: list[str] = []
        if self.last_saved is not None and self.last_saved.step == t.state.step and self.last_saved.path.is_dir():
            kept = self.last_saved  # this very step is already saved
        while kept is None:
            for place in (self.files.root, rescue_folder(self.files.root)):
                kept = self._try_save(place, failures)
                if kept is not None:
                    break
            if kept is None and not _ask_to_retry(f"{failures[-1]}: free some space and press Enter to try again"):
                break
        message = f"{during} failed: {reason}"
        if kept is not None:
            elsewhere = kept.path.parent.parent.resolve() != self.files.root.resolve()
            message += f"\nthe training is kept: a resumable checkpoint of step {t.state.step} is in {kept.path}"
            if elsewhere and self.last_saved is not None:
                message += f" (the run folder still holds step {self.last_saved.step}: {self.last_saved.path})"
            run_dir = kept.path.parent.parent if elsewhere else self.files.root
            raise SaveFailed(
                message, hint=f"free some space, then continue with: {resume_command(self.loaded, run_dir)}"
            ) from error
        listed = "; ".join(failures)
        message += f"\nsaving a resumable checkpoint failed too ({listed})\n{self._last_good_note()}"
        raise SaveFailed(message, hint="free some space on the disk of the run folder, then start again") from error

    def _try_save(self, place: Path, failures: list[str]) -> Checkpoint | None:
        try:
            return self._save_to(place)
        except OSError as exc:
            failures.append(os_error_text(exc))
            return None

    def finish(self) -> None:
        """After ``fit``: if it was stopped early, save and end the run with how to continue."""
        t = self.trainer
        if not t.stop_requested or t.state.step >= t.config.max_steps:
            return
        try:
            saved = self.save()
        except OSError as exc:
            self.rescue(exc, f"saving a checkpoint after the interrupt at step {t.state.step}")
        where = f"a resumable checkpoint is in {saved.path}" if saved else self._last_good_note()
        raise Interrupted(
            f"training interrupted at step {t.state.step} of {t.config.max_steps}; {where}",
            hint=f"continue with: {resume_command(self.loaded, self.files.root)}",
        )

    def publish_metrics(self) -> None:
        """The run's weights are saved: its metrics become the folder's ``metrics.jsonl``."""
        self.files.publish_metrics()
        self.metrics = self.files.metrics  # a rescue checkpoint after this point still takes them

    def close(self) -> None:
        """The run is finished and its weights saved: the resumable checkpoints are no longer needed."""
        remove_checkpoints(self.files.root)

    def _last_good_note(self) -> str:
        if self.last_saved is None and not self.periodic:
            return "this run keeps no periodic checkpoints (gptf ablate trains a failed run again from the start)"
        if self.last_saved is None:
            return (
                "no checkpoint had been saved before this step (set training.save_interval to keep one every N steps)"
            )
        return (
            f"the last good checkpoint (step {self.last_saved.step}) is kept in {self.last_saved.path}; "
            f"after fixing the cause, continue from it with: {resume_command(self.loaded, self.files.root)} --force"
        )


def rescue_folder(run_dir: Path) -> Path:
    """Where a checkpoint goes when the run folder's disk is full: the system's temp folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"gptf-rescue-{Path(run_dir).resolve().name}-{stamp}-{os.getpid()}"


def _ask_to_retry(question: str) -> bool:
    """At a terminal, offer to try a failed save again (a person can free space meanwhile)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    try:
        sys.stderr.write(f"{question} (Ctrl+D to give up) ")
        sys.stderr.flush()
        return sys.stdin.readline() != ""
    except (OSError, KeyboardInterrupt):
        return False


def split_resume_argument(arguments: list[str], *, resume: bool, force: bool) -> tuple[list[str], Path | None]:
    """``gptf run R.yaml a=1 --resume checkpoints/x``: with ``--resume``, the one argument
    without ``=`` names the run directory; the others are ``KEY=VALUE`` overrides."""
    if force and not resume:
        raise GptfError("--force only applies to --resume (it continues even if the recipe changed)")
    if not resume:
        return list(arguments), None
    paths = [a for a in arguments if "=" not in a]
    if len(paths) > 1:
        raise GptfError(f"--resume takes one run directory, got {len(paths)}: {', '.join(paths)}")
    if paths and not Path(paths[0]).is_dir():
        raise GptfError(
            f"'{paths[0]}' is neither a KEY=VALUE override nor a run directory",
            hint="resume a run with: gptf run RECIPE [KEY=VALUE ...] --resume [checkpoints/<name>]",
        )
    return [a for a in arguments if "=" in a], Path(paths[0]) if paths else None
