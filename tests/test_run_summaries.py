"""`vae runs` (the run folders under some paths: state, parts, the kept epoch's held-out bounds)
and `vae plot` of several runs, on copies of real training runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_cli import one_error_line, run

from vaecli.plots import (
    CURVE_PANELS,
    KEPT_COLOUR,
    PANEL_SIZE,
    TEST_COLOUR,
    Panel,
    _clip_segment,
    label_colour,
)
from vaecli.runs import LOCK_FILE, run_folder_lock


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def copy_run(source: Path, to: Path) -> Path:
    shutil.copytree(source, to, ignore=shutil.ignore_patterns(LOCK_FILE))
    return to


@pytest.fixture
def runs(small_run, stopped_run, tmp_path) -> Path:
    """runs/small (finished), runs/noisy (stopped early, --keep best) and runs/more/cut (a copy of
    small whose config.yaml asks for more epochs than it has: interrupted)."""
    folder = tmp_path / "runs"
    copy_run(small_run, folder / "small")
    copy_run(stopped_run, folder / "noisy")
    cut = copy_run(small_run, folder / "more" / "cut")
    config = yaml.safe_load((cut / "config.yaml").read_text())
    (cut / "config.yaml").write_text(yaml.safe_dump({**config, "epochs": 5}))
    (folder / "more" / "notes").mkdir()  # (not a run: not listed)
    return folder


def listed(capsys, *argv) -> list[dict]:
    code, out, err = run(capsys, "runs", *map(str, argv), "--json")
    assert code == 0 and err == "", err
    return [json.loads(line) for line in out.splitlines()]


def test_runs_lists_each_run_with_its_state_and_the_kept_epochs_held_out_figures(runs, capsys):
    got = {Path(r["run"]).relative_to(runs).as_posix(): r for r in listed(capsys, runs)}
    assert list(got) == ["more/cut", "noisy", "small"]  # (by path; a run's own folders not searched)
    assert [got[name]["state"] for name in got] == ["interrupted", "stopped early", "finished"]
    small = rows(runs / "small")
    assert got["small"]["epochs"] == got["small"]["planned_epochs"] == 2 == small[-1]["epoch"]
    assert got["small"]["split"] == "test" and got["small"]["kept_epoch"] == 2
    assert got["small"]["neg_elbo"] == small[-1]["test_neg_elbo"] and got["small"]["neg_iw_bound"] is None
    assert got["more/cut"]["planned_epochs"] == 5
    noisy = rows(runs / "noisy")
    bounds = [row["val_neg_elbo"] for row in noisy]
    assert got["noisy"]["split"] == "val" and got["noisy"]["epochs"] == len(noisy)
    assert got["noisy"]["kept_epoch"] == 1 + bounds.index(min(bounds)) < len(noisy)
    assert got["noisy"]["neg_elbo"] == min(bounds)
    for name in got:
        assert (
            got[name]["data"] == "mnist" and got[name]["model"] == "vae" and got[name]["objective"] == "elbo"
        )
        assert got[name]["elapsed_s"] == rows(runs / name)[-1]["elapsed"]


def test_runs_sorts_by_the_held_out_elbo_and_prints_one_line_a_run(runs, capsys):
    by_elbo = listed(capsys, runs, "--sort", "elbo")
    assert [r["neg_elbo"] for r in by_elbo] == sorted(r["neg_elbo"] for r in by_elbo)
    for age, name in enumerate(["small", "more/cut", "noisy"]):  # noisy wrote last, small first
        for file in (runs / name).glob("*.*"):
            os.utime(file, (1e9 + age, 1e9 + age))
    by_time = [Path(r["run"]).name for r in listed(capsys, runs, "--sort", "recent")]
    assert by_time == ["noisy", "cut", "small"]
    code, out, err = run(capsys, "runs", str(runs / "small"), str(runs / "noisy"), str(runs))
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["run", "state", "epochs"]
    assert len(lines) == 3  # (a run named twice is listed once)
    noisy = next(line for line in lines if line.startswith(str(runs / "noisy")))
    assert "stopped early" in noisy and f"{min(r['val_neg_elbo'] for r in rows(runs / 'noisy')):.2f}" in noisy


def test_runs_shows_the_largest_k_vae_eval_of_the_model_file_on_all_its_test_images(runs, capsys):
    assert run(capsys, "eval", str(runs / "small"), "--k", "2", "--json")[0] == 0
    report = json.loads((runs / "small" / "eval" / "test-k2.json").read_text())
    assert run(capsys, "eval", str(runs / "small"), "--k", "3", "--limit", "50")[0] == 0  # (not all images)
    small = listed(capsys, runs / "small")[0]
    assert (small["neg_log_px"], small["neg_log_px_k"]) == (report["neg_log_px"], 2)
    assert small["neg_log_px_stderr"] == report["neg_log_px_stderr"]
    code, out, _ = run(capsys, "runs", str(runs / "small"))
    assert code == 0 and f"{report['neg_log_px']:.2f} k=2" in out.splitlines()[1]
    later = (runs / "small" / "eval" / "test-k2.json").stat().st_mtime + 10
    os.utime(runs / "small" / "model.safetensors", (later, later))  # a model written after the eval
    assert listed(capsys, runs / "small")[0]["neg_log_px"] is None
    assert listed(capsys, runs / "noisy")[0]["neg_log_px"] is None  # (never evaluated)


def test_listing_and_comparing_runs_never_imports_torch(runs, tmp_path):
    """`vae runs` reads two text files a run; loading torch would make it take seconds."""
    code = (
        "import sys; from vaecli.cli import main; "
        f"assert main(['runs', {str(runs)!r}]) == 0; "
        f"assert main(['plot', {str(runs)!r}, '--out', {str(tmp_path / 'c.png')!r}]) == 0; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "False"


def test_a_run_being_written_is_running(runs, capsys):
    with run_folder_lock(runs / "small"):
        states = {Path(r["run"]).name: r["state"] for r in listed(capsys, runs)}
    assert states == {"cut": "interrupted", "noisy": "stopped early", "small": "running"}
    assert listed(capsys, runs / "small")[0]["state"] == "finished"  # (the lock is gone with its writer)


def test_an_unreadable_run_is_listed_and_named_on_stderr_with_exit_1(runs, capsys):
    (runs / "small" / "metrics.jsonl").write_text('not json\n{"epoch": 2}\n')
    code, out, err = run(capsys, "runs", str(runs), "--json")
    assert code == 1
    states = {Path(json.loads(line)["run"]).name: json.loads(line)["state"] for line in out.splitlines()}
    assert states == {"cut": "interrupted", "noisy": "stopped early", "small": "unreadable"}
    assert (
        one_error_line(err)
        == f"vae: {runs / 'small'}: {runs / 'small' / 'metrics.jsonl'}: line 1 is not JSON"
    )


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["runs", "{tmp}/nowhere"], 1, "nowhere: no such folder"),
        (["runs", "{runs}/small/config.yaml"], 1, "config.yaml: not a folder (give run folders"),
        (["runs", "{runs}/more/notes"], 1, "no vaecli runs in"),
        (["runs", "{runs}", "--sort", "worst"], 2, "'worst'; choose path, elbo, logpx, recent"),
        (["plot", "{runs}/more/notes", "--out", "{tmp}/c.png"], 1, "no vaecli runs in"),
    ],
)
def test_bad_input_is_one_line(runs, tmp_path, capsys, argv, code, message):
    got, out, err = run(capsys, *[a.format(runs=runs, tmp=tmp_path) for a in argv])
    assert got == code and out == ""
    assert message in one_error_line(err)
    assert not (tmp_path / "c.png").exists()


def test_plot_of_a_folder_with_an_unreadable_run_names_it_and_writes_nothing(runs, tmp_path, capsys):
    (runs / "noisy" / "config.yaml").write_text("- a list\n")
    code, _, err = run(capsys, "plot", str(runs), "--out", str(tmp_path / "c.png"))
    assert code == 1 and "noisy/config.yaml is not a mapping of training options" in one_error_line(err)
    assert not (tmp_path / "c.png").exists()


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))[..., :3]


def columns_of(area: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.nonzero(np.all(area == np.array(colour), axis=-1).any(axis=0))[0]


def test_plot_of_several_runs_draws_each_in_its_colour_as_far_as_its_epochs(runs, tmp_path, capsys):
    out = tmp_path / "c.png"
    code, _, err = run(capsys, "plot", str(runs / "small"), str(runs / "noisy"), "--out", str(out))
    assert code == 0 and err.strip() == f"wrote {out}: 2 runs"
    picture = pixels(out)
    width, height = PANEL_SIZE
    assert picture.shape[0] == height and picture.shape[1] > width * len(CURVE_PANELS)
    elbo_panel = picture[Panel.MARGIN_TOP : height - Panel.MARGIN_BOTTOM, Panel.MARGIN_LEFT : width]
    small, noisy = (columns_of(elbo_panel, label_colour(i, 2)) for i in range(2))
    assert len(small) and len(noisy)
    epochs = len(rows(runs / "noisy"))  # the x axis reaches the longer run's last epoch
    assert small.max() < noisy.max() * 2.5 / epochs + 10  # small ends at its epoch 2 (and its marks)
    key = picture[:, width * len(CURVE_PANELS) :]  # the key, right of the panels, names both
    assert len(columns_of(key, label_colour(0, 2))) and len(columns_of(key, label_colour(1, 2)))


def test_curves_of_a_keep_best_run_mark_its_kept_epoch_at_the_lowest_held_out_point(runs, tmp_path, capsys):
    out = tmp_path / "c.png"
    assert run(capsys, "plot", str(runs / "noisy"), "--out", str(out))[0] == 0
    assert out.read_bytes() == (runs / "noisy" / "curves.png").read_bytes()  # as training drew it
    width, height = PANEL_SIZE
    elbo_panel = pixels(out)[
        Panel.MARGIN_TOP : height - Panel.MARGIN_BOTTOM, Panel.MARGIN_LEFT : width - Panel.MARGIN_RIGHT
    ]
    val = np.nonzero(np.all(elbo_panel == np.array(TEST_COLOUR), axis=-1))
    lowest = val[1][val[0] == val[0].max()].mean()  # the lowest val -ELBO marker (the key is up top)
    dashes = np.all(elbo_panel == np.array(KEPT_COLOUR), axis=-1).sum(axis=0)
    kept = np.nonzero(dashes > elbo_panel.shape[0] // 3)[0]  # a dashed line from top to bottom
    assert len(kept) and abs(kept.mean() - lowest) <= 3
    assert run(capsys, "plot", str(runs / "small"), "--out", str(tmp_path / "s.png"))[0] == 0
    assert not len(columns_of(pixels(tmp_path / "s.png"), KEPT_COLOUR))  # --keep last: nothing marked


def test_a_segment_is_cut_where_it_leaves_the_plot_area():
    assert _clip_segment((0, -10), (10, 10), 0, 100) == [(5, 0), (10, 10)]
    assert _clip_segment((0, 50), (20, 150), 0, 100) == [(0, 50), (10, 100)]
    assert _clip_segment((0, -10), (10, -1), 0, 100) is None
