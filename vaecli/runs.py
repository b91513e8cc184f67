"""Run folders: naming them, and never overwriting one without ``force``."""

from __future__ import annotations

import shutil
from pathlib import Path

from vaecli.errors import VaeError

RUNS_DIR = Path("runs")
RUN_MARKERS = ("config.yaml", "model.safetensors", "metrics.jsonl", "checkpoint.safetensors")


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
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise VaeError(f"run folder {path} already exists; pass --force to replace it")
        if not is_run_dir(path):
            raise VaeError(f"{path} is not empty and is not a vaecli run; --force will not delete it")


def make_run_dir(path: Path, force: bool) -> Path:
    """Create the run folder (replacing an old run when ``force``); returns it."""
    check_run_dir(path, force)
    if path.is_dir() and force:
        shutil.rmtree(path)
    (path / "samples").mkdir(parents=True, exist_ok=True)
    return path


def discard_unresumable(path: Path) -> None:
    """Remove a run folder that failed before its first model or checkpoint: it holds only
    config.yaml and picture folders, can be neither resumed nor used, and would make the retry
    need --force. A folder with a checkpoint (for --resume) or a model is kept."""
    kept = ("checkpoint.safetensors", "model.safetensors")
    if is_run_dir(path) and not any((path / name).exists() for name in kept):
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
