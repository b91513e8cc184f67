"""Which plugin raised an unexpected exception: its kind, name and package, read from the
traceback, so a failure inside a third-party dataset, architecture, likelihood, objective or
callback is reported as that plugin's, whatever vaecli function called it."""

from __future__ import annotations

import traceback
from types import FrameType

from vaecli.registry import BY_KIND, Entry, Registry


def plugin_of(exc: BaseException) -> str | None:
    """``likelihood 'name' (package version)`` for the plugin whose code raised ``exc`` (the
    innermost frame that belongs to a plugin's module, through the chain of exceptions), or
    ``the package P version (its likelihood 'a', dataset 'b')`` when the frame cannot tell which
    of a package's parts it was; None when no plugin's code is on the traceback."""
    owners = _plugin_modules()
    if not owners:
        return None
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
        for frame in reversed(frames):
            module = str(frame.f_globals.get("__name__", ""))
            candidates = owners.get(module.partition(".")[0])
            if candidates:
                return _which(frame, module, candidates)
        error = error.__cause__ or error.__context__
    return None


def _plugin_modules() -> dict[str, list[tuple[Registry, Entry]]]:
    """Every third-party entry, by the top-level module its entry point lives in."""
    owners: dict[str, list[tuple[Registry, Entry]]] = {}
    for registry in BY_KIND.values():
        for entry in registry.entries():
            top = entry.entry_point.module.partition(".")[0]
            if entry.distribution != "vaecli" and top != "vaecli":  # (a package may re-register ours)
                owners.setdefault(top, []).append((registry, entry))
    return owners


def _which(frame: FrameType, module: str, candidates: list[tuple[Registry, Entry]]) -> str:
    """The one entry among ``candidates`` that ``frame`` runs code of, described."""
    this = frame.f_locals.get("self")
    for registry, entry in candidates:
        loaded = registry.loaded(entry)
        if loaded is None:
            continue
        if isinstance(loaded, type) and isinstance(this, loaded):
            return registry.describe(entry.qualified_name)
        if getattr(loaded, "__code__", None) is frame.f_code:
            return registry.describe(entry.qualified_name)
    used = [(r, e) for r, e in candidates if r.loaded(e) is not None] or candidates  # (imported in this run)
    current = [(r, e) for r, e in used if r.last == e]  # the parts this command built last
    same_module = [(r, e) for r, e in used if e.entry_point.module == module]
    for group in (current, same_module, used):
        if len(group) == 1:
            registry, entry = group[0]
            return registry.describe(entry.qualified_name)
    first = used[0][1]
    parts = ", ".join(f"{e.kind} '{e.name}'" for _, e in used)
    return f"the package {first.distribution} {first.version} (its {parts})"
