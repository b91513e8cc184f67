"""What ``vae runs`` lists and ``vae plot`` compares: the run folders under some paths, each read
from its config.yaml and metrics.jsonl alone (no model is loaded and no plugin imported, so a run
trained with a plugin since uninstalled is still listed)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaecli.epoch_choice import best_row, early_stop
from vaecli.errors import UsageError, VaeError
from vaecli.plots import METRICS_FILE, held_out_split, read_metrics
from vaecli.runs import CONFIG_FILE, EVAL_FOLDER, MODEL_FILE, RUN_MARKERS, is_run_dir, lock_holder


@dataclass
class RunSummary:
    """One run folder: its configuration, its epoch rows, and what it is doing."""

    path: Path
    name: str  # the path as the user wrote it (or as found under what they wrote)
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    state: str = "unreadable"
    problem: str | None = None  # why an unreadable run could not be read
    evaluation: dict[str, Any] | None = None  # the run's own `vae eval` of its model file, if any

    @property
    def split(self) -> str:
        """The held-out split its rows report: val where the run has one, else test."""
        return held_out_split(self.rows)

    @property
    def kept(self) -> dict[str, Any] | None:
        """The row of the epoch model.safetensors holds: the best one with ``--keep best``, else
        the last."""
        if self.config.get("keep") == "best":
            return best_row(self.rows, self.split)
        return self.rows[-1] if self.rows else None

    def objective_label(self) -> str | None:
        return objective_label(self.config.get("objective"), self.config.get("objective_options"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON object for ``vae runs --json``: the run's parts, its state, and the held-out
        figures of the epoch its model file holds."""
        config, kept = self.config, self.kept
        summary: dict[str, Any] = {"run": self.name, "state": self.state}
        if self.problem:
            summary["problem"] = self.problem
        for key in ("data", "model", "arch", "likelihood", "prior", "objective"):
            summary[key] = config.get(key)
        summary["epochs"] = self.rows[-1]["epoch"] if self.rows else 0
        summary["planned_epochs"] = config.get("epochs")
        summary["elapsed_s"] = _finite(self.rows[-1].get("elapsed")) if self.rows else None
        summary["split"] = self.split if self.rows else None
        summary["kept_epoch"] = kept["epoch"] if kept else None
        for metric in ("neg_elbo", "neg_iw_bound"):
            summary[metric] = _finite(kept.get(f"{self.split}_{metric}")) if kept else None
        report = self.evaluation or {}
        summary["neg_log_px"] = _finite(report.get("neg_log_px"))
        summary["neg_log_px_stderr"] = _finite(report.get("neg_log_px_stderr"))
        summary["neg_log_px_k"] = report.get("k") if self.evaluation else None
        return summary


def objective_label(name: Any, options: Any) -> str | None:
    """``iwae (k=5, dreg=False)``: an objective with the options it was given."""
    if not isinstance(name, str):
        return None
    given = ", ".join(f"{k}={v}" for k, v in options.items()) if isinstance(options, dict) else ""
    return f"{name} ({given})" if given else name


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def find_runs(paths: Iterable[str]) -> list[tuple[Path, str]]:
    """The run folders at or under each path, in the order of the paths (those under one, by
    path; a run folder's own subfolders are not searched), each with its name: the path as given,
    or as found under it. A run reached twice is listed once."""
    found: dict[Path, tuple[Path, str]] = {}
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            what = "no such folder" if not root.exists() else "not a folder"
            raise VaeError(f"{given}: {what} (give run folders, or folders that hold runs)")
        runs = [(root, given)] if is_run_dir(root) else sorted(_runs_under(root), key=lambda run: run[1])
        for path, name in runs:
            found.setdefault(path.resolve(), (path, name))
    return list(found.values())


def _runs_under(root: Path) -> Iterator[tuple[Path, str]]:
    for folder, subfolders, _ in os.walk(root):
        for sub in list(subfolders):
            path = Path(folder) / sub
            if sub.startswith(".") or is_run_dir(path):
                subfolders.remove(sub)
                if not sub.startswith("."):
                    yield path, str(path)


def summarise_run(path: Path, name: str | None = None) -> RunSummary:
    """Read one run folder; a folder whose files cannot be read comes back ``unreadable``, with why."""
    from vaecli.yamlfiles import read_yaml_file

    summary = RunSummary(path, name or str(path))
    try:
        config = read_yaml_file(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
        if not isinstance(config, dict):
            raise VaeError(f"{path / CONFIG_FILE} is not a mapping of training options")
        summary.config = config
        summary.rows = read_metrics(path) if (path / METRICS_FILE).is_file() else []
        wanted = f"{summary.split}_neg_elbo"
        if any(wanted not in row for row in summary.rows):
            raise VaeError(f"{path / METRICS_FILE}: an epoch has no {wanted}")
    except VaeError as exc:
        summary.problem = str(exc)
        return summary
    summary.state = run_state(summary)
    summary.evaluation = latest_evaluation(path)
    return summary


#: A ``vae eval`` report of the model's own test set, all of it: ``test-k5000.json`` (any seed).
OWN_TEST_REPORT = re.compile(r"test-k(\d+)(-seed\d+)?\.json")


def latest_evaluation(run: Path) -> dict[str, Any] | None:
    """The report of the run's largest-k ``vae eval`` on all its own test images, made since
    model.safetensors was last written (an older one scored other weights); None if there is none."""
    try:
        model_written = (run / MODEL_FILE).stat().st_mtime
        files = [f for f in (run / EVAL_FOLDER).iterdir() if OWN_TEST_REPORT.fullmatch(f.name)]
    except OSError:
        return None
    reports = []
    for file in files:
        try:
            if file.stat().st_mtime >= model_written:
                report = json.loads(file.read_text(encoding="utf-8"))
                if isinstance(report, dict) and isinstance(report.get("k"), int):
                    reports.append(report)
        except (OSError, ValueError):
            continue  # (a report being written, or not vaecli's: the run is still listed)
    return max(reports, key=lambda report: report["k"], default=None)


def run_state(summary: RunSummary) -> str:
    """running (another process holds its lock), no epochs, stopped early (``--patience``),
    finished (all its planned epochs), else interrupted."""
    if lock_holder(summary.path) is not None:
        return "running"
    if not summary.rows:
        return "no epochs"
    patience = summary.config.get("patience")
    if isinstance(patience, int) and early_stop(summary.rows, summary.split, patience):
        return "stopped early"
    if summary.rows[-1]["epoch"] >= (summary.config.get("epochs") or math.inf):
        return "finished"
    return "interrupted"


def _neg_elbo(summary: RunSummary) -> float:
    """The kept epoch's held-out -ELBO: what every objective reports, so it ranks runs trained
    with different ones (a k-sample bound is tighter, and only some runs have one)."""
    kept = summary.kept
    value = _finite(kept.get(f"{summary.split}_neg_elbo")) if kept else None
    return math.inf if value is None else value


def _neg_log_px(summary: RunSummary) -> float:
    value = _finite((summary.evaluation or {}).get("neg_log_px"))
    return math.inf if value is None else value


#: The orders ``vae runs --sort`` offers: path (as found), elbo (the kept epoch's held-out -ELBO,
#: lowest first), logpx (``vae eval``'s -log p(x), lowest first; runs without one last) and recent
#: (the run that wrote last first).
SORT_KEYS: dict[str, Callable[[RunSummary], Any]] = {
    "path": lambda s: s.name,
    "elbo": _neg_elbo,
    "logpx": _neg_log_px,
    "recent": lambda s: -_last_written(s.path),
}


def _last_written(run: Path) -> float:
    """When the run folder's files were last written (its latest epoch's)."""
    times = [0.0]
    for name in RUN_MARKERS:
        try:
            times.append((run / name).stat().st_mtime)
        except OSError:
            pass
    return max(times)


def summarise_runs(paths: Iterable[str], sort: str | None = None) -> list[RunSummary]:
    """Every run at or under ``paths``, in the order ``sort`` names (see :data:`SORT_KEYS`; None:
    as :func:`find_runs` finds them)."""
    if sort is not None and sort not in SORT_KEYS:
        raise UsageError(f"unknown sort order {sort!r}; choose {', '.join(SORT_KEYS)}")
    summaries = [summarise_run(path, name) for path, name in find_runs(paths)]
    return sorted(summaries, key=SORT_KEYS[sort]) if sort else summaries


def curves_picture(paths: list[str]) -> tuple[bytes, str]:
    """``vae plot``: one run's training curves (a run folder, its metrics.jsonl or model file), or
    the held-out curves of every run at or under ``paths`` side by side; the PNG and a note."""
    from vaecli.plots import CurveRun, comparison_png, curves_png

    if len(paths) == 1 and (Path(paths[0]).is_file() or is_run_dir(Path(paths[0]))):
        folder = Path(paths[0]) if Path(paths[0]).is_dir() else Path(paths[0]).parent
        summary = summarise_run(folder, paths[0])
        summary.rows = read_metrics(paths[0])  # (the file given, and its errors)
        kept = summary.kept if summary.config.get("keep") == "best" else None
        png = curves_png(summary.rows, summary.objective_label(), kept["epoch"] if kept else None)
        return png, f"{len(summary.rows)} epochs"
    summaries = summarise_runs(paths)
    for summary in summaries:
        if summary.state == "unreadable":
            raise VaeError(f"{summary.name}: {summary.problem}")
    if not summaries:
        raise VaeError(f"no vaecli runs in {', '.join(paths)}")
    if len(summaries) == 1:
        return curves_picture([str(summaries[0].path)])
    runs = [CurveRun(s.name, s.rows, s.kept["epoch"] if s.kept else None) for s in summaries]
    return comparison_png(runs), f"{len(runs)} runs"
