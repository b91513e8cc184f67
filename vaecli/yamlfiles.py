"""Reading a YAML config file a stranger may have written: bounded in size, nesting and alias
expansion (a "billion laughs" file fails in milliseconds, not after gigabytes), UTF-8 only,
and with duplicate keys refused rather than the last one silently winning."""

from __future__ import annotations

import os
from typing import Any

from vaecli.errors import UsageError, VaeError

MAX_BYTES = 1 << 20  # a config is a few hundred bytes; this leaves room for any real one
MAX_NODES = 100_000  # values after aliases are expanded
MAX_DEPTH = 64


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """The YAML document in ``path``, checked: one line naming the file for a bad one (exit 2) or
    one that cannot be read (exit 1)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise VaeError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"{path}: larger than {MAX_BYTES >> 10} KiB, not a vaecli config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    """``text`` as YAML, once its node graph has passed :func:`check_nodes`."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        check_nodes(node, source)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"{source}: not valid YAML{at}") from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply (more than {MAX_DEPTH} levels)") from None


def check_nodes(root: Any, source: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, with more than MAX_NODES values once its
    aliases are expanded, or with a mapping that repeats a key. Each node is visited once (its
    expanded size is remembered), so the check is linear in the file, however it expands."""
    import yaml

    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise UsageError(f"{source}: nested too deeply (more than {MAX_DEPTH} levels)")
        if id(node) in sizes:
            return sizes[id(node)]
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        line = key.start_mark.line + 1
                        raise UsageError(f"{source}: key '{key.value}' appears twice (again at line {line})")
                    seen.add(key.value)
                total += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        if total > MAX_NODES:
            raise UsageError(f"{source}: expands to more than {MAX_NODES} values (YAML aliases?); refused")
        sizes[id(node)] = total
        return total

    size(root, 0)
