"""Progress on stderr: plain lines every so often where there is no terminal, a live bar on one;
stdout untouched."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from vaecli import console
from vaecli.cli import main
from vaecli.console import PROGRESS_ENV, Heartbeat, duration

TINY = ["--epochs", "2", "--limit-train", "600", "--limit-test", "100", "--hidden", "16", "--latent-dim", "2"]


def test_training_eval_and_encode_print_plain_progress_lines(
    mnist_root, small_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(PROGRESS_ENV, "0")  # a line at every chance
    out = tmp_path / "run"
    assert main(["train", *TINY, "--batch-size", "100", "--device", "cpu", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{out}\n"
    lines = [line for line in captured.err.splitlines() if line.startswith("vae: training:")]
    assert re.fullmatch(r"vae: training: epoch 1 of 2, step 1 of 6, \d+ s", lines[0])  # (seconds: load)
    assert any(re.fullmatch(r"vae: training: epoch 2 of 2, step 6 of 6, \d+ s", line) for line in lines)
    assert len(lines) == 12  # every step of both epochs, between the epoch rows

    assert main(["eval", str(out), "--k", "2", "--limit", "50", "--json"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"^vae: evaluating: 50 of 50 images, \d+ s$", captured.err, re.M)
    assert captured.out.startswith("{")

    folder = tmp_path / "pngs"
    assert main(["decode", str(small_run), str(_codes(tmp_path)), "--out", str(folder)]) == 0
    assert re.search(r"^vae: decoding: 3 images, \d+ s$", capsys.readouterr().err, re.M)
    assert main(["encode", str(small_run), str(folder)]) == 0
    captured = capsys.readouterr()
    assert re.search(r"^vae: encoding: 3 images, \d+ s$", captured.err, re.M)
    assert len(captured.out.splitlines()) == 3 and "vae:" not in captured.out


def _codes(tmp_path: Path) -> Path:
    """Three records of the small run's 8 latent dimensions."""
    codes = tmp_path / "codes.jsonl"
    codes.write_text("".join(f'{{"mu": [{", ".join(["0.5"] * 8)}]}}\n' for _ in range(3)))
    return codes


def test_quiet_training_and_the_default_interval_print_none(mnist_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert main(["train", *TINY, "-q", "--device", "cpu", "--out", str(tmp_path / "q")]) == 0
    assert "vae: training:" not in capsys.readouterr().err
    monkeypatch.delenv(PROGRESS_ENV)
    assert main(["train", *TINY, "--device", "cpu", "--out", str(tmp_path / "d")]) == 0
    assert "vae: training:" not in capsys.readouterr().err  # (a short run: under 30 s)


def test_heartbeat_interval_and_durations(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "not a number")
    assert Heartbeat("x").every == 30.0
    monkeypatch.setenv(PROGRESS_ENV, "-5")
    assert Heartbeat("x").every == 0.0
    assert [duration(s) for s in (0, 59.9, 60, 187, 3600, 3725)] == [
        "0 s",
        "59 s",
        "1 min 00 s",
        "3 min 07 s",
        "1 h 00 min",
        "1 h 02 min",
    ]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_say_the_time_left_at_the_rate_since_the_first_count(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    clock = Clock()
    beat = Heartbeat("evaluating", clock)
    beat.enabled = True  # (pytest's stderr is no terminal; said outright all the same)
    for seconds, done in ((5, 10), (10, 20), (3590, 30), (0, 110)):
        clock.now += seconds
        beat.beat(lambda d=done: f"{d} of 110 images", done, 110)
    assert capsys.readouterr().err.splitlines() == [
        "vae: evaluating: 10 of 110 images, 5 s",  # (the first count: no rate yet)
        "vae: evaluating: 20 of 110 images, 15 s, about 1 min 30 s left",  # 10 in 10 s, 90 to go
        "vae: evaluating: 30 of 110 images, 1 h 00 min, about 4 h 00 min left",  # 20 in 3600 s
        "vae: evaluating: 110 of 110 images, 1 h 00 min",
    ]


def test_a_terminal_shows_the_whole_run_s_time_left_beside_the_epoch_bar(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=out, force_terminal=True, width=160))
    clock = Clock()
    observer = console.ConsoleObserver(quiet=False, clock=clock)
    terms = ["train_loss", "train_neg_elbo", "test_neg_elbo", "test_reconstruction", "test_kl"]
    row = dict.fromkeys(terms, 1.0)
    row["images_per_s"] = 5.0
    for epoch in (1, 2):
        observer.on_epoch_start(epoch, 4, 10)
        for step in range(1, 11):
            clock.now += 2.0
            observer.on_step(step)
        observer.on_epoch_end(row | {"epoch": epoch})
    observer.on_epoch_start(3, 4, 10)
    observer.progress.stop()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "epoch 1/4 " in text and "epoch 1/4, about" not in text  # (nothing counted yet)
    assert "epoch 2/4, about 1 min 00 s left" in text  # 9 steps in 18 s, 30 to go
    assert "epoch 3/4, about 40 s left" in text  # 19 steps in 38 s, 20 to go
