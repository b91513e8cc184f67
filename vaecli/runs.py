"""Run folders: naming them, never overwriting one without ``force``, and one writer at a time."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from vaecli.errors import VaeError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not locked there
    fcntl = None  # type: ignore[assignment]

RUNS_DIR = Path("runs")
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
RUN_MARKERS = (CONFIG_FILE, MODEL_FILE, "metrics.jsonl", "checkpoint.safetensors")
#: What makes a run folder worth keeping: something to use or to resume from.
RESUMABLE = ("checkpoint.safetensors", MODEL_FILE)
#: ``vae eval`` of a run folder saves its report here, a file per setting (``test-k5000.json``).
EVAL_FOLDER = "eval"
#: Held (flock) by the process writing a run folder; it stays (empty) in a folder that holds a run.
LOCK_FILE = ".vaecli-lock"


def default_run_dir(stem: str, base: Path = RUNS_DIR) -> Path:
    """``runs/STEM``, or ``runs/STEM-2``, ``-3``... whichever is free first."""
    candidate, n = base / stem, 1
    while candidate.exists():
        n += 1
        candidate = base / f"{stem}-{n}"
    return candidate


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def check_run_dir(path: Path, force: bool) -> None:
    """Fail before any work if ``path`` cannot become a fresh run folder."""
    if path.exists() and not path.is_dir():
        raise VaeError(f"{path} exists and is not a folder; choose another --out")
    if path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir()):
        if not force:
            raise VaeError(f"run folder {path} already exists; pass --force to replace it")
        if not is_run_dir(path):
            raise VaeError(f"{path} is not empty and is not a vaecli run; --force will not delete it")


def make_run_dir(path: Path, force: bool) -> Path:
    """Create the run folder (replacing an old run when ``force``); returns it."""
    check_run_dir(path, force)
    if path.is_dir() and force:  # everything but the lock, which this process holds
        for child in path.iterdir():
            if child.name != LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (path / "samples").mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def run_folder_lock(path: Path) -> Iterator[None]:
    """Hold the run folder's lock while a run writes it: a second ``vae train`` into the same
    folder (two ``--force`` runs, or a resume while it trains) is refused in one line. The lock is
    the kernel's (flock on an empty ``LOCK_FILE``), so a killed run leaves none behind; nothing is
    written into the file, and a run that did not get as far as a run folder removes what it made
    for the lock (the file, and the folders it created)."""
    if fcntl is None:
        yield
        return
    missing = [p for p in (path, *path.parents) if not p.exists()]
    lock = path / LOCK_FILE
    had_lock = lock.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise VaeError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _flock_holder(fd) or "another process"
            raise VaeError(
                f"{path} is being written by another vae train ({holder}); wait for it to end, or "
                "choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)
        if not had_lock and not any((path / name).exists() for name in RESUMABLE):
            lock.unlink(missing_ok=True)
            for folder in missing:  # (deepest first: only those this run created, if still empty)
                with contextlib.suppress(OSError):
                    folder.rmdir()


def lock_holder(path: Path) -> str | None:
    """``pid N on HOST``, the process writing run folder ``path`` (holding its lock), or None where
    none does. Read from Linux's /proc/locks, so looking never takes the lock (a ``vae train``
    starting at that moment is not refused); elsewhere by trying a shared lock for an instant."""
    lock = path / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None  # no lock file: no run has written here since it was made
    try:
        return _flock_holder(fd)
    finally:
        os.close(fd)


def _flock_holder(fd: int) -> str | None:
    """Who holds a flock on ``fd``'s file: ``pid N on HOST`` (from /proc/locks), ``another
    process`` (no /proc/locks, but the file is locked), or None."""
    stat = os.fstat(fd)
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return "another process" if _locked(fd) else None
    for line in table.splitlines():
        fields = line.split()
        if "FLOCK" not in fields or "->" in fields:
            continue
        at = fields.index("FLOCK")
        try:
            pid, (major, minor, inode) = fields[at + 3], fields[at + 4].split(":")
            same = int(inode) == stat.st_ino and (int(major, 16), int(minor, 16)) == (
                os.major(stat.st_dev), os.minor(stat.st_dev))  # fmt: skip
        except (IndexError, ValueError):
            continue
        if same:
            return f"pid {pid} on {socket.gethostname()}"
    return None


def _locked(fd: int) -> bool:
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def discard_unresumable(path: Path) -> None:
    """Remove a run folder that failed before its first model or checkpoint: it holds only
    config.yaml and picture folders, can be neither resumed nor used, and would make the retry
    need --force. A folder with a checkpoint (for --resume) or a model is kept."""
    if is_run_dir(path) and not any((path / name).exists() for name in RESUMABLE):
        shutil.rmtree(path, ignore_errors=True)


LEGACY_TEMPORARIES = (".tmp??????", ".*.tmp")  # safetensors' own, and vaecli's before 0.1's short names


def remove_legacy_temporaries(path: Path) -> None:
    """Remove temporaries that a killed run of an older vaecli (or safetensors' own save) left in
    a run folder and its picture folders; today's are removed by :mod:`vaecli.fileio` itself."""
    from vaecli.fileio import TEMP_PREFIX

    for folder in (path, path / "samples", path / "reconstructions"):
        for pattern in LEGACY_TEMPORARIES:
            for leftover in folder.glob(pattern):
                if leftover.is_file() and not leftover.name.startswith(TEMP_PREFIX):
                    leftover.unlink(missing_ok=True)
