"""Writing files so that nothing is half-written under its final name."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaecli.errors import VaeError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced (unless ``sync`` is
    False: many small files, where a crash may lose but never half-write one) and renamed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual permissions
    try:
        yield tmp
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):  # a full disk, a read-only folder: say which file, in one line
            raise VaeError(f"cannot write {final}: {exc.strerror or exc}") from exc
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file."""
    with atomic_path(path, sync) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def strict_json(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON that strict parsers accept: a non-finite float (a diverged run's NaN or
    infinity) is written as null, never as the NaN Python's json writes by default."""
    return json.dumps(_finite(value), allow_nan=False, indent=indent)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
