"""MATLAB .mat files (SVHN's, Burda's Omniglot), read through scipy: the datasets that need it
say how to install it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaecli.errors import VaeError


def require_scipy(dataset: str) -> Any:
    """``scipy.io``, or one error saying how to install it; the datasets call it before they download,
    so nobody fetches 200 MB to learn that they cannot read it."""
    try:
        import scipy.io
    except ImportError:
        raise VaeError(
            f"dataset '{dataset}' reads .mat files with scipy, which is not installed: "
            "pip install 'vaecli[datasets]'"
        ) from None
    return scipy.io


def read_mat(path: Path, keys: tuple[str, ...], dataset: str) -> dict[str, Any]:
    """The arrays ``keys`` of a .mat file; a file that is no .mat file, or lacks one of them, is
    one error naming it."""
    scipy_io = require_scipy(dataset)
    fix = "delete it to download it again"
    try:
        content = scipy_io.loadmat(str(path), variable_names=list(keys))
    except OSError as exc:
        raise VaeError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # (scipy raises ValueError, TypeError, MatReadError... on damaged files)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VaeError(f"{path} is not a readable .mat file ({first}); {fix}") from None
    missing = [key for key in keys if key not in content]
    if missing:
        raise VaeError(f"{path} has no {' or '.join(missing)}: not {dataset}'s file; {fix}")
    return content
