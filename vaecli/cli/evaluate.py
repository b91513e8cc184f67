"""``vae eval``: the bounds on log p(x) of a model, as a table or JSON."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from vaecli.cli.common import (
    DataDirOpt,
    DataOptOpt,
    DeviceOpt,
    ModelArg,
    SeedOpt,
)
from vaecli.config import EvalConfig
from vaecli.console import progress_bar


def eval_command(
    model: ModelArg,
    data: Annotated[
        str | None, typer.Option(help="Dataset (default: the one the model was trained on).")
    ] = None,
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    split: Annotated[
        str, typer.Option(help="test, train or val (where the data have one).")
    ] = EvalConfig.split,
    k: Annotated[int, typer.Option("--k", help="Importance samples per image.")] = EvalConfig.k,
    seed: SeedOpt = EvalConfig.seed,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Samples (images x samples) decoded at once; bounds memory (default: auto)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N images.")] = None,
    device: DeviceOpt = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead.")] = False,
) -> None:
    """Score a model: -ELBO, its terms, importance-sampled log p(x), active units."""

    from vaecli.evaluation import evaluate_model
    from vaecli.fileio import strict_json
    from vaecli.options import parse_key_values

    config = EvalConfig(
        model=model,
        data=data,
        data_dir=data_dir,
        data_options=parse_key_values(data_opt or [], "--data-opt"),
        split=split,
        k=k,
        seed=seed,
        batch_size=batch_size,
        limit=limit,
        device=device,
    )
    with progress_bar("evaluating") as progress:
        report = evaluate_model(config, progress)
    if json_output:
        print(strict_json(report.to_dict(), indent=2))
    else:
        _print_eval_report(report)


def _print_eval_report(report: Any) -> None:
    from rich.table import Table

    src = report.source
    console = Console(soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"{src.get('model')}: {src.get('data')} {src.get('split')} split, {report.images} images, "
        f"k = {report.k}, seed {report.seed}"
    )
    bpd = report.bits_per_dim or {}
    table = Table(box=None, pad_edge=False)
    for column, justify in (("nats/image", "left"), ("mean", "right"), ("std. error", "right")):
        table.add_column(column, justify=justify)
    if bpd:
        table.add_column("bits/dim", justify="right")

    def row(name: str, value: float, stderr_: float | None = None, bits: float | None = None) -> None:
        cells = [name, f"{value:.2f}", "" if stderr_ is None else f"{stderr_:.2f}"]
        table.add_row(*cells, *([f"{bits:.4f}" if bits is not None else ""] if bpd else []))

    row("-ELBO", report.neg_elbo, report.neg_elbo_stderr, bpd.get("neg_elbo"))
    row("  reconstruction -E_q log p(x|z)", report.reconstruction)
    row("  KL(q(z|x) || p(z))", report.kl)
    row(f"-log p(x), importance-sampled (k = {report.k})", report.neg_log_px, report.neg_log_px_stderr,
        bpd.get("neg_log_px"))  # fmt: skip
    row("gap log p(x) - ELBO ~ KL(q(z|x) || p(z|x))", report.gap, report.gap_stderr)
    console.print(table)
    console.print(
        f"active units: {report.active_units} of {report.latent_dim} "
        f"(Cov_x(E_q[z_d]) > {report.active_threshold})"
    )
    if len(report.groups) > 1:
        console.print(_group_table(report))
    dims = Table(box=None, pad_edge=False)
    for column in ("dim", "group", "KL nats", "Cov_x(E_q[z])", "active"):
        dims.add_column(column, justify="right")
    kls = report.kl_per_dim or [None] * report.latent_dim  # (a mixture prior's KL has no parts per dimension)
    names = [name for name, size in report.groups.items() for _ in range(size)] or [""] * report.latent_dim
    for d, (kl, activity, group) in enumerate(zip(kls, report.activity, names, strict=True)):
        dims.add_row(
            str(d), group, "-" if kl is None else f"{kl:.3f}", f"{activity:.4f}",
            "yes" if activity > report.active_threshold else "no",
        )  # fmt: skip
    console.print(dims)


def _group_table(report: Any) -> Any:
    """The KL and active units of each latent group (top first)."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("group", "size", "KL nats", "active units"):
        table.add_column(column, justify="right")
    for name, size in report.groups.items():
        table.add_row(name, str(size), f"{report.kl_per_group[name]:.3f}", str(report.active_per_group[name]))
    return table
