"""``vae runs``: the run folders under some paths, one line each: state, parts, held-out bounds."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from vaecli.cli.common import say
from vaecli.console import duration, printable

#: The table's columns: (heading, cell of a run's JSON object).
COLUMNS: tuple[tuple[str, Any], ...] = (
    ("run", lambda r: r["run"]),
    ("state", lambda r: r["state"]),
    ("epochs", lambda r: f"{r['epochs']}/{r['planned_epochs'] or '?'}"),
    ("data", lambda r: r["data"]),
    ("model", lambda r: r["model"] if r["model"] != "vae" else f"vae {r['arch']}"),
    ("likelihood", lambda r: r["likelihood"]),
    ("prior", lambda r: r["prior"]),
    ("objective", lambda r: r["objective"]),
    ("kept", lambda r: r["kept_epoch"]),
    ("held-out", lambda r: r["split"]),
    ("-ELBO", lambda r: _nats(r["neg_elbo"])),
    ("-IW bound", lambda r: _nats(r["neg_iw_bound"])),
    ("-log p(x)", lambda r: f"{r['neg_log_px']:.2f} k={r['neg_log_px_k']}" if r["neg_log_px"] else None),
    ("time", lambda r: duration(r["elapsed_s"]) if r["elapsed_s"] is not None else None),
)


def _nats(value: float | None) -> str | None:
    return f"{value:.2f}" if value is not None else None


def runs(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Run folders, or folders to search for runs (default: runs).")
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            help="path, elbo (the kept epoch's held-out -ELBO, lowest first), logpx (vae eval's -log "
            "p(x), lowest first) or recent (last trained first).",
        ),
    ] = "path",
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object a run (JSON Lines) instead.")
    ] = False,
) -> None:
    """List training runs: state, epochs, parts, the held-out -ELBO (and k-sample bound) of the
    epoch each model file holds, and vae eval's -log p(x) of it; exit 1 if a run could not be read."""
    from vaecli.errors import VaeError
    from vaecli.fileio import strict_json
    from vaecli.run_summaries import summarise_runs

    summaries = summarise_runs(paths or ["runs"], sort)
    if not summaries:
        raise VaeError(f"no vaecli runs in {', '.join(paths or ['runs'])}")
    rows = [summary.to_dict() for summary in summaries]
    if json_output:
        sys.stdout.write("".join(strict_json(row) + "\n" for row in rows))
    else:
        _print_table(rows)
    unreadable = [row for row in rows if row["state"] == "unreadable"]
    for row in unreadable:
        say(f"vae: {printable(row['run'])}: {row['problem']}")
    if unreadable:
        raise typer.Exit(code=1)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for heading, _ in COLUMNS:
        table.add_column(
            heading,
            justify="right" if heading in ("epochs", "kept", "-ELBO", "-IW bound", "-log p(x)") else "left",
        )
    for row in rows:
        table.add_row(*(printable(str(cell(row))) if cell(row) is not None else "-" for _, cell in COLUMNS))
    # One run a line where stdout is a pipe or file (`vae runs | sort`), whatever its width.
    Console(
        soft_wrap=True, width=None if sys.stdout.isatty() else 1 << 12, highlight=False, markup=False
    ).print(table)
