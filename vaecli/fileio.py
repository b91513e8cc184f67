"""Writing files so that nothing is half-written under its final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaecli.errors import VaeError

#: Temporary files are named ``.vaecli-HOST-PID-RANDOM.tmp`` (HOST: a hash of the host name), the
#: same short length whatever the final name, so a final name of up to 255 bytes can be written.
#: A temporary left by a process that was killed is recognised by its dead PID, on this host,
#: and removed the next time anything is written into that folder.
TEMP_PREFIX = ".vaecli-"
TEMP_SUFFIX = ".tmp"
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_swept: set[Path] = set()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced (unless ``sync`` is
    False: many small files, where a crash may lose but never half-write one), given the usual
    permissions and renamed. Any failure (a full disk, a read-only folder) is one line naming
    ``path``, and the temporary is removed."""
    final = Path(path)
    tmp = final.parent / f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final.parent)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # (0666 less the umask)
    except OSError as exc:
        raise VaeError(f"cannot write {final}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # (in case the writer replaced the file with a 0600 one)
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise VaeError(f"cannot write {final}: {exc.strerror or exc}") from exc
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporaries in ``folder`` that processes of this host, now dead, left behind
    (once per folder and process: writing many files into one folder stays linear)."""
    folder = folder.resolve()
    if folder in _swept:
        return
    _swept.add(folder)
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            name = entry.name
            if not (name.startswith(f"{TEMP_PREFIX}{_HOST}-") and name.endswith(TEMP_SUFFIX)):
                continue
            pid = name[len(TEMP_PREFIX) + len(_HOST) + 1 :].partition("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # (it exists, owned by someone else)
    return True


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
