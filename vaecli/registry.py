"""Named factories from entry points: datasets, architectures, likelihoods, priors, models,
objectives, callbacks.

vaecli's own built-ins are declared under the same entry-point groups in its pyproject.toml
as any third-party plugin, so there is one door for everyone. An entry point is imported
only when its name is asked for.

When two distributions register the same name, a bare name means vaecli's own entry if it
has one, else the entry of the distribution whose name sorts first (case-insensitively);
``DIST:NAME`` picks one. The first use of a clashing name in a process warns once.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from vaecli.errors import UsageError, VaeError, out_of_memory

GROUPS = {
    "dataset": "vaecli.datasets",
    "architecture": "vaecli.architectures",
    "likelihood": "vaecli.likelihoods",
    "prior": "vaecli.priors",
    "model": "vaecli.models",
    "objective": "vaecli.objectives",
    "callback": "vaecli.callbacks",
}


def fold(name: str) -> str:
    """A name as compared when it is not found as typed: lower case, without - _ . or spaces."""
    return re.sub(r"[-_. ]", "", name.lower())


@dataclass(frozen=True)
class Entry:
    """One registered name: where it comes from and how to load it."""

    kind: str
    name: str
    distribution: str
    version: str
    entry_point: EntryPoint = field(compare=False, repr=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"


class Registry:
    """The entries of one kind (``dataset``, ``architecture``, ``likelihood``, ...). ``base``
    ("module:Class"), where given, is the class every entry of the kind must subclass."""

    def __init__(self, kind: str, base: str | None = None) -> None:
        self.kind = kind
        self.group = GROUPS[kind]
        self.base = base
        self._loaded: dict[Entry, Any] = {}
        self._warned: set[str] = set()  # clashing names already warned about in this process
        self._entries: tuple[tuple[tuple[str, float], ...], list[Entry]] | None = None
        self.last: Entry | None = None  # the entry this process built most recently

    def entries(self) -> list[Entry]:
        """Every entry of this kind, sorted by name then distribution; nothing is imported. The
        list is kept until ``sys.path`` or one of its folders changes (a package installed or
        removed): reading every distribution's metadata takes milliseconds, and a model load
        asks for its parts a dozen times."""
        key = _path_state()
        if self._entries is None or self._entries[0] != key:
            self._entries = (key, self._scan())
        return list(self._entries[1])

    def _scan(self) -> list[Entry]:
        found = []
        for ep in installed_entry_points().select(group=self.group):
            dist = getattr(ep, "dist", None)
            found.append(
                Entry(
                    kind=self.kind,
                    name=ep.name,
                    distribution=dist.metadata["Name"] if dist is not None else "unknown",
                    version=dist.version if dist is not None else "unknown",
                    entry_point=ep,
                )
            )
        unique = {(e.name, e.distribution): e for e in found}
        return sorted(unique.values(), key=precedence)

    def canonical(self, name: str) -> str:
        """``name`` as registered (``FashionMNIST`` gives ``fashion-mnist``), a ``DIST:`` kept."""
        dist, sep, _ = name.rpartition(":") if ":" in name else ("", "", name)
        return f"{dist}{sep}{self.entry(name).name}"

    def names(self) -> list[str]:
        return sorted({e.name for e in self.entries()})

    def entry(self, name: str) -> Entry:
        """The entry for ``name`` or ``distribution:name``."""
        dist, sep, bare = name.rpartition(":") if ":" in name else ("", "", name)
        matches = [e for e in self.entries() if e.name == bare]
        if not matches:  # as users type names: FashionMNIST, fashion_mnist for fashion-mnist
            matches = [e for e in self.entries() if fold(e.name) == fold(bare)]
            if len({e.name for e in matches}) > 1:
                spellings = ", ".join(sorted({e.name for e in matches}))
                raise UsageError(f"{self.kind} '{name}' could be any of {spellings}: give the name exactly")
        if sep:
            matches = [e for e in matches if e.distribution == dist]
        if not matches:
            known = ", ".join(self.names()) or "none installed"
            close = difflib.get_close_matches(fold(bare), [fold(n) for n in self.names()], n=1, cutoff=0.75)
            hint = "".join(f"did you mean '{n}'? " for n in self.names() if close and fold(n) == close[0])
            raise UsageError(f"unknown {self.kind} '{name}' ({hint}available: {known})")
        if len(matches) > 1 and bare not in self._warned:
            self._warned.add(bare)
            chosen = matches[0]
            others = ", ".join(e.qualified_name for e in matches[1:])
            why = "vaecli's own" if chosen.distribution == "vaecli" else "the first package by name"
            warnings.warn(
                f"{self.kind} '{bare}' is registered by more than one package; using "
                f"{chosen.qualified_name}, {why} (also: {others}; name one as DIST:NAME)",
                stacklevel=2,
            )
        return matches[0]

    def describe(self, name: str) -> str:
        """``kind 'name' (distribution version)``, for messages about what a plugin did."""
        entry = self.entry(name)
        return f"{self.kind} '{entry.name}' ({entry.distribution} {entry.version})"

    def load(self, name: str) -> Any:
        """Import and return the object registered as ``name``."""
        entry = self.entry(name)
        if entry not in self._loaded:
            try:
                self._loaded[entry] = entry.entry_point.load()
            except Exception as exc:  # a broken plugin must not look like a vaecli bug
                raise VaeError(
                    f"{self.kind} '{entry.name}' from {entry.distribution} {entry.version} "
                    f"failed to load: {type(exc).__name__}: {exc}"
                ) from exc
        return self._loaded[entry]

    def loaded(self, entry: Entry) -> Any:
        """What ``entry`` imported to, if it has been loaded in this process (else None)."""
        return self._loaded.get(entry)

    def check(self, name: str) -> None:
        """Load ``name`` and check that it is a subclass of the kind's base class."""
        loaded = self.load(name)
        if self.base is None:
            return
        module, _, attribute = self.base.partition(":")
        base = getattr(importlib.import_module(module), attribute)
        if not (isinstance(loaded, type) and issubclass(loaded, base)):
            got = loaded.__name__ if isinstance(loaded, type) else type(loaded).__name__
            raise VaeError(f"{self.describe(name)} is not a vaecli {base.__name__} class (got {got})")

    def call(
        self, name: str, args: tuple[Any, ...], options: dict[str, Any], method: str | None = None
    ) -> tuple[Any, str]:
        """What the factory registered as ``name`` (or its ``method``, for a class) returns for
        ``args`` and ``options``, and its description. A bad option value is one line naming the
        part and its package; any other failure inside the plugin's factory is reported as the
        plugin's."""
        from vaecli.options import call_with_options

        factory, what = self.load(name), self.describe(name)
        factory = getattr(factory, method) if method else factory
        self.last = self.entry(name)
        try:
            return call_with_options(factory, what, args, options), what
        except UsageError as exc:
            raise UsageError(str(exc) if str(exc).startswith(what) else f"{what}: {exc}") from None
        except VaeError:
            raise
        except Exception as exc:
            memory = out_of_memory(exc)
            if memory:
                raise VaeError(f"{what} cannot be built with these sizes: {memory}") from exc
            raise VaeError(f"{what} failed to start: {type(exc).__name__}: {exc}") from exc

    def build(self, name: str, options: dict[str, Any]) -> tuple[Any, str]:
        """An instance of the class registered as ``name`` (checked to subclass the kind's base),
        made with ``options``, and its description; failures as for :meth:`call`."""
        self.check(name)
        return self.call(name, (), options)

    def require(self, name: str, recorded: Any, where: str) -> Entry:
        """The entry for ``name``, which ``where`` (a model file, a run) was made with; when it is
        not installed, one line saying which package (and version) ``recorded`` says it came from
        (``recorded``: the ``{"name", "distribution", "version"}`` a model file or checkpoint
        keeps of each part; anything else when unknown)."""
        given = recorded if isinstance(recorded, dict) else {}
        recorded = {k: v for k, v in given.items() if isinstance(v, str)}
        dist = recorded.get("distribution")
        bare = recorded.get("name", name.rpartition(":")[2])
        if not dist:
            return self.entry(name)  # (or the plain "unknown ... (available: ...)" line)
        # Only the recorded package's entry: another package's part of the same name would make a
        # model score on other images, or a run train another architecture, without a word.
        try:
            return self.entry(f"{dist}:{bare}")
        except UsageError:
            pass
        version = recorded.get("version", "")
        raise VaeError(
            f"{where} needs the {self.kind} '{bare}' from the package {dist} {version}".rstrip()
            + f", which is not installed: pip install {dist}"
        )


_INSTALLED: tuple[tuple[tuple[str, float], ...], Any] | None = None


def installed_entry_points() -> Any:
    """Every installed distribution's entry points, all groups, read once for all the registries
    until ``sys.path`` or one of its folders changes (each read opens every distribution's
    metadata: 25 ms here, which a registry per kind paid a dozen times a start)."""
    global _INSTALLED
    key = _path_state()
    if _INSTALLED is None or _INSTALLED[0] != key:
        _INSTALLED = (key, entry_points())
    return _INSTALLED[1]


def _path_state() -> tuple[tuple[str, float], ...]:
    """Each folder on sys.path with its modification time: what entry points are found from."""
    state = []
    for folder in sys.path:
        try:
            state.append((folder, os.stat(folder or ".").st_mtime))
        except OSError:
            state.append((folder, -1.0))
    return tuple(state)


def precedence(entry: Entry) -> tuple[str, bool, str]:
    """The order of entries: by name; of one name, vaecli's own, then by distribution name."""
    return (entry.name, entry.distribution != "vaecli", entry.distribution.lower())


datasets = Registry("dataset")
architectures = Registry("architecture")
likelihoods = Registry("likelihood", "vaecli.likelihoods:Likelihood")
priors = Registry("prior", "vaecli.priors.base:Prior")
models = Registry("model", "vaecli.models.base:LatentVariableModel")
objectives = Registry("objective", "vaecli.objectives.base:Objective")
callbacks = Registry("callback", "vaecli.training.callbacks:Callback")

BY_KIND = {r.kind: r for r in (datasets, architectures, likelihoods, priors, models, objectives, callbacks)}


@dataclass(frozen=True)
class EntryStatus:
    """An entry and whether it imports: what ``vae plugins`` lists."""

    entry: Entry
    error: str | None
    clashes: tuple[str, ...]  # the other distributions registering the same name

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.entry.kind,
            "name": self.entry.name,
            "qualified_name": self.entry.qualified_name,
            "distribution": self.entry.distribution,
            "version": self.entry.version,
            "target": self.entry.entry_point.value,
            "loaded": self.error is None,
            "error": self.error,
            "also_registered_by": list(self.clashes),
        }


def survey() -> list[EntryStatus]:
    """Every registered part (dataset, architecture, likelihood, objective, callback), each
    imported to check that it loads; a failure is recorded (and warned about), never raised."""
    statuses = []
    for registry in BY_KIND.values():
        entries = registry.entries()
        for entry in entries:
            clashes = tuple(e.distribution for e in entries if e.name == entry.name and e != entry)
            try:
                registry.check(entry.qualified_name)
                error = None
            except VaeError as exc:
                error = str(exc)
                warnings.warn(error, stacklevel=2)
            statuses.append(EntryStatus(entry, error, clashes))
    return statuses
