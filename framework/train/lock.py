"""One writer per run folder: the lock ``gptf run`` holds on its output folder.

Two runs writing one folder at once would mix their metrics, checkpoints and weights (and
one removes files the other is about to rename). So ``gptf run`` holds an exclusive lock
on ``<run folder>/.gptf.lock`` from the moment it knows the folder until it has finished:

* the lock is the operating system's (``flock``), not the file's existence: when the
  process ends, however it ends (``kill -9``, a power cut), the lock is gone with it. A lock
  file left behind by a dead process is simply taken over, with a note;
* the file holds the holder's process id, so the second run's error names it;
* ``gptf generate`` and friends refuse a folder that is locked, because its files are
  being replaced right now (:func:`lock_holder`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from gptf.errors import GptfError, RunFolderBusy, os_error_text

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".gptf.lock"
#: A run that finds the folder locked tries again for this long: someone merely looking at
#: the folder (:func:`lock_holder`) holds it for a moment only.
RETRY_S = 1.0


def _try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take the lock on an open file without waiting; False if someone else holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows: lock the first byte
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError, or EACCES on some systems
        return False
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_record(fd: int) -> dict[str, Any]:
    """What the lock file says about its holder ({} if nothing readable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict[str, Any]) -> str:
    pid = record.get("pid")
    parts = [f"pid {pid}" if isinstance(pid, int) else "pid unknown"]
    if isinstance(record.get("host"), str) and record["host"] != socket.gethostname():
        parts.append(f"on {record['host']}")
    if isinstance(record.get("started"), str):
        parts.append(f"since {record['started']}")
    return ", ".join(parts)


class RunLock:
    """The exclusive lock of one run folder (``acquire`` ... ``release``, or ``with``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self._fd: int | None = None
        self._made: list[Path] = []  # folders this lock created (innermost first), removed again if left empty

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, console: Console | None = None) -> RunLock:
        """Lock the folder (made if missing); :class:`RunFolderBusy` if a live process holds it."""
        if self._fd is not None:
            return self
        if not self.root.is_dir():
            missing = [self.root, *(p for p in self.root.parents if not p.exists())]
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # e.g. inside /proc, or a parent that is not a folder: name it, no traceback
                for made in (p for p in missing if p.is_dir()):  # deepest first: leave nothing half-made
                    with contextlib.suppress(OSError):
                        made.rmdir()
                where = "" if exc.filename == str(self.root) else f" {self.root}"  # the error may name a parent
                raise GptfError(
                    f"cannot make the run folder{where}: {os_error_text(exc)}",
                    hint="give the run a folder gptf can write: output_dir=checkpoints/<name>",
                ) from exc
            self._made = [p for p in missing if p.is_dir()]
        deadline = time.monotonic() + RETRY_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                record = _read_record(fd)
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                self._forget_folder()
                raise RunFolderBusy(
                    f"{self.root} is in use by another gptf run ({_describe(record)}): two runs writing one "
                    "folder would mix their checkpoints, metrics and weights",
                    hint="wait until that run has finished, or give this one its own folder "
                    "(output_dir=checkpoints/other or name=other)",
                )
            if not self._same_file(fd):  # removed by its last holder between our open and our lock
                os.close(fd)
                continue
            break
        stale = _read_record(fd)
        if stale.get("pid") and console is not None:
            console.print(
                f"note: {self.root} was locked by {_describe(stale)}, which is no longer running; taking the lock over",
                highlight=False,
                markup=False,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            return False

    def release(self) -> None:
        """Unlock; the lock file is removed, and the folder too if this lock made it and it is empty."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: whoever opened it before retries (see acquire)
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None
        self._forget_folder()

    def _forget_folder(self) -> None:
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote something, keep it (and its parents)
                break
        self._made = []

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(root: Path) -> str | None:
    """Who is writing ``root`` now (``pid 123, since ...``), or None if no live process is."""
    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_lock(fd, shared=True):
            _unlock(fd)
            return None
        return _describe(_read_record(fd))
    finally:
        os.close(fd)
