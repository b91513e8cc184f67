"""``vae plugins``: every registered part and the package it is from."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console


def plugins(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead.")] = False,
) -> None:
    """List every dataset, architecture, likelihood, prior, objective and callback, with its package."""
    import json

    from rich.table import Table

    from vaecli.registry import BY_KIND, survey

    statuses = survey()
    if json_output:
        groups: dict[str, list[dict[str, Any]]] = {f"{kind}s": [] for kind in BY_KIND}
        for status in statuses:
            groups[f"{status.entry.kind}s"].append(status.to_dict())
        print(json.dumps(groups, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("kind", "name", "package", "version", "status"):
        table.add_column(column)
    for status in statuses:
        entry = status.entry
        state = "ok" if status.error is None else f"[red]failed[/red]: {status.error}"
        if status.clashes:
            state += f" (also in {', '.join(status.clashes)}: name one as DIST:NAME)"
        table.add_row(entry.kind, entry.name, entry.distribution, entry.version, state)
    # One row a line where stdout is a pipe or file (`vae plugins | grep`), whatever its width.
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 1 << 12).print(table)
