"""Files of latent codes: what ``vae encode`` writes and ``vae decode`` reads back.

Formats (``FORMATS``):

- ``jsonl``: one JSON object per image, ``{"path": ..., "mu": [...], "logvar": [...]}``.
- ``csv``: a header row (``path,mu_0,...,mu_{d-1},logvar_0,...``), then one row per image.
- ``npy``: one structured array with a field per code (``np.load(f)["mu"]`` is (N, d) float32).
- ``safetensors``: one float32 tensor (N, d) per code.

A hierarchy's codes of more than its top group (``vae encode --group all``, or one lower group)
are written per group: ``mu_z1``, ``mu_z2``, ... (csv columns ``mu_z1_0``, ...), so a file says
which numbers belong to which group; readers join them again in the model's group order.

The two binary formats keep the paths, in order, in a sidecar ``FILE.paths.jsonl`` (one JSON
string per line). Numbers are float32 written with 9 significant digits, which read back to
the same float32. Writers stream (rows are written as batches arrive; nothing grows with the
number of images), and a file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vaecli.errors import UsageError, VaeError
from vaecli.fileio import atomic_path

CODE_FIELDS = ("mu", "logvar", "z")
FIELDS = ("path", *CODE_FIELDS)
DEFAULT_FIELDS = ("path", "mu", "logvar")
CODES_FORMAT = "vaecli-codes"
NUMBER = "%.9g"  # 9 significant digits: every float32 survives the round trip through text


@dataclass
class Failure:
    """An input that gave no record: where (a file's path, or ``line N``) and why."""

    where: str
    reason: str
    before: int = 0  #: how many records of the same batch come before it


@dataclass
class CodeBatch:
    """Records in input order: their paths (None when unknown) and codes, each (n, latent)
    float32 on the CPU; ``failures`` are the inputs among them that gave no record."""

    paths: list[str | None]
    codes: dict[str, torch.Tensor]
    failures: list[Failure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def head(self, n: int) -> CodeBatch:
        """The first ``n`` records, without failures."""
        return CodeBatch(self.paths[:n], {k: v[:n] for k, v in self.codes.items()})


def parse_fields(text: str) -> tuple[str, ...]:
    """``"path,mu"`` as a checked tuple of field names."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name not in FIELDS:
            raise UsageError(f"unknown field '{name}' in --fields (use {', '.join(FIELDS)})")
    if not names:
        raise UsageError(f"--fields is empty (use some of {', '.join(FIELDS)})")
    if len(set(names)) != len(names):
        raise UsageError(f"--fields names a field twice: '{text}'")
    return names


Widths = int | Mapping[str, int]  #: the numbers of every code field, or of each


def group_fields(
    fields: tuple[str, ...], groups: Mapping[str, int]
) -> tuple[tuple[str, ...], dict[str, int]]:
    """The fields written for codes by group (``groups``: name -> size, in the model's order):
    ``mu`` becomes ``mu_z1``, ``mu_z2``, ...; and the width of each."""
    named: list[str] = []
    widths: dict[str, int] = {}
    for name in fields:
        if name not in CODE_FIELDS:
            named.append(name)
            continue
        for group, size in groups.items():
            named.append(f"{name}_{group}")
            widths[named[-1]] = size
    return tuple(named), widths


def split_field(name: str, groups: Iterable[str] | None = None) -> tuple[str, str | None] | None:
    """``"mu"`` -> ("mu", None), ``"mu_z2"`` -> ("mu", "z2") (when ``groups``, the model's, has
    z2; any group when None); None for a name that is no code."""
    if name in CODE_FIELDS:
        return name, None
    base, _, group = name.partition("_")
    known = group != "" if groups is None else group in groups
    return (base, group) if base in CODE_FIELDS and known else None


def join_groups(names: Iterable[str], groups: tuple[str, ...], where: str) -> dict[str, tuple[str, ...]]:
    """Each code (mu, logvar, z) of a file and the file's fields that make it up, in the model's
    group order: ``{"mu": ("mu",)}``, or ``{"mu": ("mu_z1", "mu_z2")}`` for codes written by group.
    Grouped codes must be the model's top groups (z1, z1 and z2, ...: what decode takes)."""
    parts: dict[str, dict[str | None, str]] = {}
    for name in names:
        split = split_field(name, groups)
        if split is not None:
            parts.setdefault(split[0], {})[split[1]] = name
    joined: dict[str, tuple[str, ...]] = {}
    for base in sorted(parts, key=CODE_FIELDS.index):
        found = parts[base]
        if None in found:
            if len(found) > 1:
                raise VaeError(f"{where}: '{base}' is there both whole and by group; give one or the other")
            joined[base] = (found[None],)
            continue
        if sorted(found, key=groups.index) != list(groups[: len(found)]):
            held = ", ".join(sorted(found, key=groups.index))
            raise VaeError(
                f"{where}: the codes hold {held} of this model's groups ({', '.join(groups)}); decode "
                "takes the top groups' values (encode --group all, or the default)"
            )
        joined[base] = tuple(found[group] for group in groups[: len(found)])
    if len({len(v) for v in joined.values()}) > 1:
        raise VaeError(f"{where}: the codes do not all hold the same groups ({', '.join(parts)})")
    return joined


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """Where the paths of a binary codes file are kept."""
    return Path(f"{os.fspath(output)}.paths.jsonl")


def choose_format(format: str | None, output: str | None, fields: tuple[str, ...]) -> str:
    """The output format: ``format`` if given, else from the output file's suffix, else jsonl."""
    if format is None:
        suffix = Path(output).suffix.lower().lstrip(".") if output and output != "-" else ""
        format = SUFFIXES.get(suffix, "jsonl")
    if format not in FORMATS:
        raise UsageError(f"unknown --format '{format}' (use {', '.join(FORMATS)})")
    if format in BINARY:
        if output is None or output == "-":
            raise UsageError(f"--format {format} is a binary file: give --output FILE")
        if not any(name in CODE_FIELDS for name in fields):
            raise UsageError(f"--format {format} stores codes: --fields must name mu, logvar or z")
    return format


def output_files(format: str, output: str, fields: tuple[str, ...]) -> list[Path]:
    """Every file a codes file of ``format`` at ``output`` consists of."""
    files = [Path(output)]
    if format in BINARY and "path" in fields:
        files.append(sidecar_path(output))
    return files


class CodeWriter:
    """Writes batches of records; ``finish`` completes the file. ``widths``: the numbers in each
    code field (one size for all of them, or one per field for codes written by group)."""

    def __init__(self, stream: BinaryIO, fields: tuple[str, ...], widths: Widths) -> None:
        self.stream = stream
        self.fields = fields
        self.codes = tuple(name for name in fields if split_field(name) is not None)
        self.widths = {name: widths if isinstance(widths, int) else widths[name] for name in self.codes}
        self.count = 0

    def write(self, batch: CodeBatch) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        self.stream.flush()


class _TextWriter(CodeWriter):
    """Rows of text made from one %-template per row (fast: one formatting call per record)."""

    def __init__(self, stream: BinaryIO, fields: tuple[str, ...], widths: Widths) -> None:
        super().__init__(stream, fields, widths)
        before = fields[: fields.index("path")] if "path" in fields else ()
        self.numbers_before_path = sum(self.widths.get(name, 0) for name in before)
        self.template = self.row_template(NUMBER)
        self.safe_template = self.row_template("%s")

    def row_template(self, number: str) -> str:
        raise NotImplementedError

    def format_path(self, path: str | None) -> str:
        raise NotImplementedError

    def format_number(self, value: float) -> str:
        raise NotImplementedError

    def write(self, batch: CodeBatch) -> None:
        if not len(batch):
            return
        numbers = torch.cat([batch.codes[name] for name in self.codes], 1) if self.codes else None
        rows = numbers.tolist() if numbers is not None else [[] for _ in batch.paths]
        finite = numbers is None or bool(torch.isfinite(numbers).all())
        template = self.template if finite else self.safe_template
        k, with_path = self.numbers_before_path, "path" in self.fields
        lines = []
        for path, row in zip(batch.paths, rows, strict=True):
            values = row if finite else [self.format_number(v) for v in row]
            if with_path:
                values = [*values[:k], self.format_path(path), *values[k:]]
            lines.append(template % tuple(values))
        self.stream.write("".join(lines).encode("utf-8", "surrogateescape"))
        self.stream.flush()  # a pipeline sees each batch as soon as it is encoded
        self.count += len(batch)


class JsonlWriter(_TextWriter):
    """One JSON object per line, keys in the order of ``fields``."""

    def row_template(self, number: str) -> str:
        parts = [
            f'"{name}": %s' if name == "path" else f'"{name}": [{", ".join([number] * self.widths[name])}]'
            for name in self.fields
        ]
        return "{" + ", ".join(parts) + "}\n"

    def format_path(self, path: str | None) -> str:
        return json.dumps(path, ensure_ascii=False)

    def format_number(self, value: float) -> str:
        return NUMBER % value if np.isfinite(value) else "null"  # JSON has no NaN or Infinity


class CsvWriter(_TextWriter):
    """A header row, then one row per record (RFC 4180 quoting of paths)."""

    def __init__(self, stream: BinaryIO, fields: tuple[str, ...], widths: Widths) -> None:
        super().__init__(stream, fields, widths)
        header = [
            name if name == "path" else f"{name}_{i}"
            for name in fields
            for i in (range(1) if name == "path" else range(self.widths[name]))
        ]
        self.stream.write((",".join(header) + "\n").encode("utf-8"))

    def row_template(self, number: str) -> str:
        cells = ["%s" if name == "path" else ",".join([number] * self.widths[name]) for name in self.fields]
        return ",".join(cells) + "\n"

    def format_path(self, path: str | None) -> str:
        text = "" if path is None else path
        if any(c in text for c in ',"\r\n') or text != text.strip():
            return '"' + text.replace('"', '""') + '"'
        return text

    def format_number(self, value: float) -> str:
        return NUMBER % value


class _BinaryWriter(CodeWriter):
    """Codes in a binary file, paths in the sidecar stream (when ``path`` is a field)."""

    def __init__(
        self, stream: BinaryIO, fields: tuple[str, ...], widths: Widths, paths: BinaryIO | None
    ) -> None:
        super().__init__(stream, fields, widths)
        self.paths = paths

    def write_paths(self, batch: CodeBatch) -> None:
        if self.paths is not None and len(batch):
            text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in batch.paths)
            self.paths.write(text.encode("utf-8", "surrogateescape"))


class NpyWriter(_BinaryWriter):
    """A structured array (N,) with one (latent,) float32 field per code. N is unknown until the
    end, so the header is written with room to spare and rewritten with the count at the end."""

    MAGIC = b"\x93NUMPY\x01\x00"

    def __init__(
        self, stream: BinaryIO, fields: tuple[str, ...], widths: Widths, paths: BinaryIO | None
    ) -> None:
        super().__init__(stream, fields, widths, paths)
        self.dtype = np.dtype([(name, "<f4", (self.widths[name],)) for name in self.codes])
        self.header_size = len(self._header(10**19, None))
        self.stream.write(self._header(0, self.header_size))

    def _header(self, count: int, size: int | None) -> bytes:
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({count},), }}"
        body = len(self.MAGIC) + 2 + len(text) + 1
        total = size if size is not None else -(-body // 64) * 64  # numpy aligns data to 64 bytes
        text = text + " " * (total - body) + "\n"
        return self.MAGIC + struct.pack("<H", len(text)) + text.encode("latin1")

    def write(self, batch: CodeBatch) -> None:
        rows = np.empty(len(batch), dtype=self.dtype)
        for name in self.codes:
            rows[name] = batch.codes[name].numpy()
        self.stream.write(rows.tobytes())
        self.write_paths(batch)
        self.count += len(batch)

    def finish(self) -> None:
        self.stream.seek(0)
        self.stream.write(self._header(self.count, self.header_size))
        super().finish()


class SafetensorsWriter(_BinaryWriter):
    """One float32 tensor (N, latent) per code. Each code is spooled to an unnamed temporary
    file beside the output while batches arrive; at the end the header is written and the
    spools are copied after it."""

    def __init__(
        self,
        stream: BinaryIO,
        fields: tuple[str, ...],
        widths: Widths,
        paths: BinaryIO | None,
        metadata: dict[str, str] | None = None,
        spool_dir: str | None = None,
    ) -> None:
        super().__init__(stream, fields, widths, paths)
        self.metadata = {"format": CODES_FORMAT, "fields": ",".join(fields), **(metadata or {})}
        self.spools = {name: tempfile.TemporaryFile(dir=spool_dir) for name in self.codes}

    def write(self, batch: CodeBatch) -> None:
        for name in self.codes:
            self.spools[name].write(batch.codes[name].numpy().astype("<f4").tobytes())
        self.write_paths(batch)
        self.count += len(batch)

    def finish(self) -> None:
        header: dict[str, object] = {"__metadata__": {**self.metadata, "count": str(self.count)}}
        offset = 0
        for name in self.codes:
            shape, size = [self.count, self.widths[name]], self.count * self.widths[name] * 4
            header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data start 8-byte aligned
        self.stream.write(struct.pack("<Q", len(text)) + text)
        for name in self.codes:
            spool = self.spools[name]
            spool.seek(0)
            shutil.copyfileobj(spool, self.stream, 1 << 20)
            spool.close()
        super().finish()


FORMATS: dict[str, type[CodeWriter]] = {
    "jsonl": JsonlWriter,
    "csv": CsvWriter,
    "npy": NpyWriter,
    "safetensors": SafetensorsWriter,
}
BINARY = ("npy", "safetensors")
SUFFIXES = {"jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "csv": "csv", "npy": "npy",
            "safetensors": "safetensors"}  # fmt: skip


@contextlib.contextmanager
def open_writer(
    format: str,
    output: str | None,
    fields: tuple[str, ...],
    widths: Widths,
    stdout: BinaryIO,
    metadata: dict[str, str] | None = None,
) -> Iterator[CodeWriter]:
    """A writer of ``format`` to ``output`` (None or ``-``: ``stdout``, text formats only);
    ``widths`` as for :class:`CodeWriter`.
    Files appear under their names only when the block ends without an error; the paths
    sidecar of a binary format is renamed first, so a codes file always has its paths."""
    with contextlib.ExitStack() as stack:
        if output is None or output == "-":
            writer = FORMATS[format](stdout, fields, widths)
        else:
            stream = stack.enter_context(open(stack.enter_context(atomic_path(output)), "wb"))
            if format not in BINARY:
                writer = FORMATS[format](stream, fields, widths)
            else:
                paths = None
                if "path" in fields:
                    sidecar = stack.enter_context(atomic_path(sidecar_path(output)))
                    paths = stack.enter_context(open(sidecar, "wb"))
                if format == "npy":
                    writer = NpyWriter(stream, fields, widths, paths)
                else:
                    spool_dir = str(Path(output).resolve().parent)
                    writer = SafetensorsWriter(stream, fields, widths, paths, metadata, spool_dir)
        yield writer
        writer.finish()


# ----------------------------------------------------------------------------- reading


def read_codes(
    source: str,
    format: str | None,
    batch_size: int,
    latent_dim: int | tuple[int, ...],
    stdin: BinaryIO,
    groups: tuple[str, ...] = (),
) -> Iterator[CodeBatch]:
    """Batches of records from a codes file (``-``: ``stdin``, jsonl or csv), streaming; codes
    written by group (``mu_z1``, ... of the model's ``groups``) are joined into one ``mu``.

    A record that cannot be read (bad JSON, a missing code, a non-number) becomes a
    :class:`Failure`; codes of another length than ``latent_dim`` (or than one of the lengths it
    lists: a hierarchy takes the values of its top groups) stop with a :class:`VaeError` (the codes
    were made by another model)."""
    if source == "-":
        stream = stdin
        chosen = format or _sniff_text(stream)
        if chosen in BINARY:
            raise UsageError(f"read {chosen} codes from a file, not from stdin")
    else:
        path = Path(source)
        if not path.is_file():
            raise VaeError(f"no codes file at {source}")
        chosen = format or SUFFIXES.get(path.suffix.lower().lstrip("."), None) or _sniff_file(path)
    if chosen not in READERS:
        raise UsageError(f"unknown --format '{chosen}' (use {', '.join(FORMATS)})")
    if chosen in BINARY:
        yield from READERS[chosen](Path(source), _Batcher(batch_size, latent_dim, groups))
        return
    with contextlib.ExitStack() as stack:
        if source != "-":
            stream = stack.enter_context(open(source, "rb"))
        yield from READERS[chosen](stream, _Batcher(batch_size, latent_dim, groups))


def _sniff_text(stream: BinaryIO) -> str:
    head = stream.peek(1)[:64] if hasattr(stream, "peek") else b""
    return "jsonl" if head.lstrip()[:1] in (b"{", b"") else "csv"


def _sniff_file(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(NpyWriter.MAGIC[:6]):
        return "npy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "jsonl" if head.lstrip()[:1] in (b"{", b"") else "csv"


class _Batcher:
    """Collects records into :class:`CodeBatch` objects of ``size``; knows the model's code sizes
    and latent groups."""

    def __init__(self, size: int, latent_dim: int | tuple[int, ...], groups: tuple[str, ...] = ()) -> None:
        self.size, self.accepted, self.groups = size, _widths(latent_dim), groups
        self.latent_dim = self.accepted[0] if len(self.accepted) == 1 else None  # else: the first record's
        self.fields: tuple[str, ...] | None = None
        self.layout: dict[str, tuple[str, ...]] | None = None  # each code's fields in a record
        self._reset()

    def join(self, record: dict[str, list[float]], where: str) -> dict[str, list[float]]:
        """A record's codes, those written by group joined (the layout is the first record's);
        a part missing is a ValueError."""
        layout = self.layout if self.layout is not None else join_groups(record, self.groups, where)
        self.layout = layout or None  # a record without codes fixes nothing
        codes = {}
        for base, parts in layout.items():
            missing = [part for part in parts if part not in record]
            if missing and len(parts) > 1:
                raise ValueError(f"no '{missing[0]}' (earlier records have it)")
            if not missing:
                codes[base] = [v for part in parts for v in record[part]]
        return codes

    def _reset(self) -> None:
        self.paths: list[str | None] = []
        self.rows: dict[str, list[list[float]]] = {}
        self.failures: list[Failure] = []

    def check(self, codes: dict[str, list[float]], where: str) -> str | None:
        """None if ``codes`` fit this file's fields and the model, else the reason they do not."""
        if self.fields is None:
            if not codes:
                return f"no codes (a record needs one of {', '.join(CODE_FIELDS)})"
            self.fields = tuple(sorted(codes, key=CODE_FIELDS.index))
        missing = [name for name in self.fields if name not in codes]
        if missing:
            return f"no '{missing[0]}' (earlier records have it)"
        for name in self.fields:
            if self.latent_dim is None and len(codes[name]) in self.accepted:
                self.latent_dim = len(codes[name])
            if len(codes[name]) != self.latent_dim:
                raise VaeError(
                    f"{where}: '{name}' has {len(codes[name])} numbers but the model's latent size is "
                    f"{_size_words(self.accepted, self.latent_dim)} (were these codes made by another model?)"
                )
        return None

    def add(self, path: str | None, codes: dict[str, list[float]]) -> CodeBatch | None:
        self.paths.append(path)
        for name in self.fields or ():
            self.rows.setdefault(name, []).append(codes[name])
        return self.take() if len(self.paths) >= self.size else None

    def fail(self, where: str, reason: str) -> None:
        self.failures.append(Failure(where, reason, before=len(self.paths)))

    def take(self) -> CodeBatch | None:
        if not self.paths and not self.failures:
            return None
        codes = {
            name: torch.tensor(rows, dtype=torch.float32).view(-1, self.latent_dim or self.accepted[0])
            for name, rows in self.rows.items()
        }
        batch = CodeBatch(self.paths, codes, self.failures)
        self._reset()
        return batch


def _numbers(value: object, name: str) -> list[float]:
    if not isinstance(value, list) or not all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value
    ):
        raise ValueError(f"'{name}' is not a list of numbers")
    return [float("nan") if v is None else float(v) for v in value]


def _read_jsonl(stream: BinaryIO, batcher: _Batcher) -> Iterator[CodeBatch]:
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(raw.decode("utf-8", "surrogateescape"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            path = record.get("path")
            if path is not None and not isinstance(path, str):
                raise ValueError("'path' is not a string")
            named = {k: _numbers(v, k) for k, v in record.items() if split_field(k, batcher.groups)}
            codes = batcher.join(named, where)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            batcher.fail(where, str(exc).splitlines()[0] if str(exc) else "not JSON")
            continue
        except RecursionError:
            batcher.fail(where, "nested too deeply")
            continue
        reason = batcher.check(codes, where)
        if reason is not None:
            batcher.fail(where, reason)
            continue
        batch = batcher.add(path, codes)
        if batch is not None:
            yield batch
    last = batcher.take()
    if last is not None:
        yield last


def _read_csv(stream: BinaryIO, batcher: _Batcher) -> Iterator[CodeBatch]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    try:
        yield from _csv_batches(csv.reader(text), batcher)
    finally:
        text.detach()  # the caller owns (and closes) the stream


def _csv_columns(header: list[str], groups: tuple[str, ...]) -> dict[str, list[int]]:
    """The header's columns of ``path`` and of each code (those written by group joined)."""
    named: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        field, _, index = name.rpartition("_")
        if name == "path":
            named["path"] = [i]
        elif index.isdigit() and split_field(field, groups) is not None:
            named.setdefault(field, []).append(i)
    layout = join_groups(named, groups, "the CSV header")
    if not layout:
        raise VaeError(f"the CSV header names no codes ({', '.join(f'{n}_0' for n in CODE_FIELDS)}, ...)")
    columns = {base: [i for part in parts for i in named[part]] for base, parts in layout.items()}
    return {**columns, **({"path": named["path"]} if "path" in named else {})}


def _csv_batches(reader: Any, batcher: _Batcher) -> Iterator[CodeBatch]:
    header = next(reader, None)
    if header is None:
        return
    columns = _csv_columns(header, batcher.groups)
    for row in reader:
        where = f"line {reader.line_num}"
        if not row:
            continue
        if len(row) != len(header):
            batcher.fail(where, f"{len(row)} cells, the header has {len(header)}")
            continue
        try:
            codes = {n: [float(row[i]) for i in columns[n]] for n in CODE_FIELDS if n in columns}
        except ValueError as exc:
            batcher.fail(where, str(exc))
            continue
        reason = batcher.check(codes, where)
        if reason is not None:
            batcher.fail(where, reason)
            continue
        batch = batcher.add(row[columns["path"][0]] if "path" in columns else None, codes)
        if batch is not None:
            yield batch
    last = batcher.take()
    if last is not None:
        yield last


def _sidecar_paths(path: Path) -> Iterator[str | None]:
    """The paths of a binary codes file, then None for ever (no sidecar: names unknown)."""
    side = sidecar_path(path)
    if side.is_file():
        with open(side, "rb") as f:
            for line in f:
                try:
                    value = json.loads(line.decode("utf-8", "surrogateescape"))
                except (ValueError, RecursionError):
                    value = None
                yield value if isinstance(value, str) else None
    while True:
        yield None


def _binary_batches(
    path: Path, count: int, get: Callable[[str, int, int], np.ndarray], layout: dict[str, tuple[str, ...]],
    batch_size: int,
) -> Iterator[CodeBatch]:  # fmt: skip
    paths = _sidecar_paths(path)
    for start in range(0, count, batch_size):
        stop = min(count, start + batch_size)
        codes = {
            base: torch.from_numpy(np.concatenate([get(n, start, stop) for n in parts], 1).astype(np.float32))
            for base, parts in layout.items()
        }
        yield CodeBatch([next(paths) for _ in range(start, stop)], codes)


def _joined_shapes(
    path: Path, layout: dict[str, tuple[str, ...]], shape: Callable[[str], tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """The shape of each code, its parts (written by group) side by side."""
    shapes = []
    for parts in layout.values():
        each = {part: tuple(shape(part)) for part in parts}
        if len(parts) == 1:
            shapes.append(each[parts[0]])
            continue
        for part, size in each.items():
            if len(size) != 2 or size[0] != each[parts[0]][0]:
                raise VaeError(f"{path}: '{part}' has shape {size}, expected ({each[parts[0]][0]}, n)")
        shapes.append((each[parts[0]][0], sum(size[1] for size in each.values())))
    return shapes


def _widths(latent_dim: int | tuple[int, ...]) -> tuple[int, ...]:
    return (latent_dim,) if isinstance(latent_dim, int) else tuple(latent_dim)


def _size_words(accepted: tuple[int, ...], first: int | None = None) -> str:
    """The code size(s) a model takes, for messages."""
    if first is not None and len(accepted) > 1:
        return f"{first} in this file's first record"
    return str(accepted[0]) if len(accepted) == 1 else "one of " + ", ".join(map(str, accepted))


def _check_binary(path: Path, names: list[str], shapes: list[tuple[int, ...]],
                  latent_dim: int | tuple[int, ...]) -> None:  # fmt: skip
    if not names:
        raise VaeError(f"{path} holds no codes ({', '.join(CODE_FIELDS)})")
    accepted = _widths(latent_dim)
    for name, shape in zip(names, shapes, strict=True):
        if len(shape) != 2 or shape[0] != shapes[0][0]:
            raise VaeError(
                f"{path}: '{name}' has shape {tuple(shape)}, expected (N, {_size_words(accepted)})"
            )
        if shape[1] not in accepted or shape[1] != shapes[0][1]:
            raise VaeError(
                f"{path}: '{name}' has {shape[1]} numbers per record but the model's latent size is "
                f"{_size_words(accepted)} (were these codes made by another model?)"
            )


def _read_npy(path: Path, batcher: _Batcher) -> Iterator[CodeBatch]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise VaeError(f"{path} is not a readable .npy file ({exc})") from exc
    if array.ndim != 1:
        raise VaeError(f"{path} is not a codes array (expected fields {', '.join(CODE_FIELDS)})")
    layout = join_groups(array.dtype.names or (), batcher.groups, str(path))
    shapes = _joined_shapes(path, layout, lambda n: (len(array), *array.dtype[n].shape))
    _check_binary(path, list(layout), shapes, batcher.accepted)
    yield from _binary_batches(path, len(array), lambda n, a, b: array[n][a:b], layout, batcher.size)


def _read_safetensors(path: Path, batcher: _Batcher) -> Iterator[CodeBatch]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            layout = join_groups(f.keys(), batcher.groups, str(path))
            slices = {n: f.get_slice(n) for parts in layout.values() for n in parts}
            shapes = _joined_shapes(path, layout, lambda n: tuple(slices[n].get_shape()))
            _check_binary(path, list(layout), shapes, batcher.accepted)
            get = lambda n, a, b: slices[n][a:b]  # noqa: E731
            yield from _binary_batches(path, shapes[0][0], get, layout, batcher.size)
    except (SafetensorError, OSError) as exc:
        raise VaeError(f"{path} is not a readable safetensors file ({exc})") from exc


READERS: dict[str, Callable[..., Iterator[CodeBatch]]] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "npy": _read_npy,
    "safetensors": _read_safetensors,
}
