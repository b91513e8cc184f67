"""Options for plugins (datasets, architectures, likelihoods): parsing and validation.

Options arrive from the command line as ``key=value`` strings and from Python or a model
file as real values; the helpers here accept both, so a factory reads them the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vaecli.errors import UsageError


def parse_key_values(items: Iterable[str], what: str) -> dict[str, str]:
    """Turn ``["a=1", "b=x"]`` into ``{"a": "1", "b": "x"}``."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} option '{item}' is not of the form KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def int_list(value: str | Iterable[int], name: str) -> tuple[int, ...]:
    """Read ``"512,256"`` or ``[512, 256]`` as positive integers (no empty items: ``"512,,256"``
    is refused)."""
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        if any(isinstance(v, (bool, float)) for v in items):
            raise ValueError
        numbers = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise UsageError(f"option {name} wants comma-separated integers, got '{value}'") from None
    if not numbers or any(n <= 0 for n in numbers):
        raise UsageError(f"option {name} wants positive integers, got '{value}'")
    return numbers


def as_float(value: str | float, name: str) -> float:
    """Read a float option."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"option {name} wants a number, got '{value}'") from None


def as_int(value: str | int, name: str, minimum: int | None = None) -> int:
    """Read an integer option, at least ``minimum`` when given."""
    try:
        if isinstance(value, (bool, float)):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"option {name} wants an integer, got '{value}'") from None
    if minimum is not None and number < minimum:
        raise UsageError(f"option {name} wants an integer of at least {minimum}, got '{value}'")
    return number


def as_bool(value: str | bool, name: str) -> bool:
    """Read a yes/no option: true/false, yes/no, on/off or 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False,
             "0": False}  # fmt: skip
    word = str(value).strip().lower()
    if word not in words:
        raise UsageError(f"option {name} wants true or false, got '{value}'")
    return words[word]


def call_with_options(
    factory: Callable[..., Any],
    what: str,
    args: tuple[Any, ...],
    options: Mapping[str, Any],
) -> Any:
    """Call ``factory(*args, **options)``, naming ``what`` when an option does not belong to it."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [
        n
        for n, p in list(params.items())[len(args) :]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not takes_any:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            takes = ", ".join(accepted) if accepted else "no options"
            raise UsageError(f"{what} has no option '{unknown[0]}' (it takes: {takes})")
    return factory(*args, **options)


def _is_plain(value: Any) -> bool:
    """True for values a JSON header stores and gives back as the same option."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def with_defaults(
    factory: Callable[..., Any], args: tuple[Any, ...], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``options`` plus every keyword default of ``factory`` (after its ``args``) that a JSON
    header can hold: what a model file records, so a later change of a default never changes
    how an old model is rebuilt."""
    params = list(inspect.signature(factory).parameters.values())[len(args) :]
    defaults = {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in params
        if p.default is not inspect.Parameter.empty and _is_plain(p.default)
    }
    return {**defaults, **options}
