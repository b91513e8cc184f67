"""Choosing an epoch on the validation split: `--keep best` (the model file holds the epoch with
the lowest validation bound) and `--patience N` (stop N epochs after it), on real MNIST runs."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from selection_runs import NOISY, PATIENCE, noisy_config
from test_cli import one_error_line, run
from test_distributed import TORCHRUN, vae_env
from test_runs import CrashAt

from vaecli.config import TrainConfig, load_config_file
from vaecli.epoch_choice import best_row, early_stop, held_out_bound, is_best
from vaecli.errors import UsageError
from vaecli.modelfile import read_header
from vaecli.train import train


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


@pytest.fixture
def stopped(stopped_run: Path) -> Path:
    return stopped_run


@pytest.mark.slow
def test_keep_best_holds_the_epoch_with_the_lowest_validation_bound_and_patience_stops_after_it(stopped):
    history = rows(stopped)
    bounds = [row["val_neg_elbo"] for row in history]
    best = 1 + bounds.index(min(bounds))
    assert best < len(history) < NOISY["epochs"]  # (not the last epoch, and it stopped early)
    assert len(history) == best + PATIENCE  # stopped exactly PATIENCE epochs after the best
    assert all(bound > min(bounds) for bound in bounds[best:])
    assert read_header(stopped / "model.safetensors")["metrics"] == history[best - 1]


@pytest.mark.slow
def test_the_kept_model_is_the_weights_a_run_of_that_many_epochs_ends_with(stopped, mnist_root, tmp_path):
    """An independent check: the same run cut at the best epoch (its model file the last one's)."""
    best = read_header(stopped / "model.safetensors")["metrics"]["epoch"]
    cut = tmp_path / "cut"
    train(noisy_config(mnist_root, cut, epochs=best, keep="last", patience=None))
    ours, theirs = tensors(stopped), tensors(cut)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.slow
def test_a_run_crashed_after_its_best_epoch_resumes_to_the_same_choice(stopped, mnist_root, tmp_path):
    """The best and the epochs since it are read back from metrics.jsonl: a crash between the best
    epoch and the stop loses neither (the model file on disk stays the best one's)."""
    best = read_header(stopped / "model.safetensors")["metrics"]["epoch"]
    out = tmp_path / "crashed"
    with pytest.raises(SystemError, match="power cut"):
        train(noisy_config(mnist_root, out), callbacks=CrashAt(best + 1, 5))
    assert read_header(out / "model.safetensors")["metrics"]["epoch"] == best
    train(noisy_config(mnist_root, out), resume=True)
    drop = ("seconds", "elapsed", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows(out)] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows(stopped)
    ]
    ours, theirs = tensors(out), tensors(stopped)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_resuming_a_run_that_stopped_early_says_so_in_one_line(stopped, capsys, mnist_root, monkeypatch):
    monkeypatch.setenv("VAECLI_DATA_DIR", str(mnist_root))
    code, out, err = run(capsys, "train", "--resume", str(stopped))
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert f"{stopped} stopped early after epoch" in line
    assert line.endswith("in 3 epochs (--patience): nothing to resume")


@pytest.mark.slow
def test_patience_stops_every_rank_of_a_torchrun_job_after_the_same_epoch(stopped, mnist_root, tmp_path):
    """Only rank 0 has the rows; it tells the others, so no rank waits in the next epoch's
    all-reduce for one that has left. Two ranks of 5 images each take the single run's batch."""
    out = tmp_path / "ddp"
    argv = ["train", "--data-opt", "val=200", "--limit-train", "300", "--limit-test", "200",
            "--batch-size", "10", "--epochs", "30", "--lr", "3e-3", "--lr-schedule", "constant",
            "--device", "cpu", "--keep", "best", "--patience", str(PATIENCE), "--quiet",
            "--out", str(out)]  # fmt: skip
    done = subprocess.run([*TORCHRUN, "-m", "vaecli", *argv], env=vae_env(mnist_root), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(out)]
    assert [r["epoch"] for r in rows(out)] == [r["epoch"] for r in rows(stopped)]
    assert done.stderr.count("stopped early after epoch") == 1  # (rank 0 alone says it)
    kept = read_header(out / "model.safetensors")["metrics"]["epoch"]
    assert kept == read_header(stopped / "model.safetensors")["metrics"]["epoch"]
    told = f"vae: model.safetensors holds epoch {kept}: the lowest val_neg_elbo ("
    assert done.stderr.count(told) == 1 and f") of the {kept + PATIENCE} epochs\n" in done.stderr


def test_the_bound_is_the_objectives_own_where_it_reports_one_and_nan_is_never_best():
    elbo = [{"epoch": 1, "val_neg_elbo": 90.0}, {"epoch": 2, "val_neg_elbo": 89.0}]
    assert held_out_bound(elbo[1], "val") == ("val_neg_elbo", 89.0)
    assert is_best(elbo, "val") and best_row(elbo, "val")["epoch"] == 2
    iwae = [{"epoch": 1, "val_neg_elbo": 90.0, "val_neg_iw_bound": 88.0},
            {"epoch": 2, "val_neg_elbo": 89.0, "val_neg_iw_bound": 88.5}]  # fmt: skip
    assert held_out_bound(iwae[1], "val") == ("val_neg_iw_bound", 88.5)
    assert best_row(iwae, "val")["epoch"] == 1 and not is_best(iwae, "val")
    broken = [*elbo, {"epoch": 3, "val_neg_elbo": math.nan}]
    assert held_out_bound(broken[2], "val")[1] == math.inf and not is_best(broken, "val")
    tied = [*elbo, {"epoch": 3, "val_neg_elbo": 89.0}]
    assert best_row(tied, "val")["epoch"] == 2 and not is_best(tied, "val")  # (a tie is not better)
    assert early_stop(tied, "val", None) is None and early_stop(tied, "val", 2) is None
    assert early_stop(tied, "val", 1) == (
        "stopped early after epoch 3: val_neg_elbo has not gone below epoch 2's 89.00 in 1 epoch (--patience)"
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--keep", "worst"], "--keep: unknown 'worst' (use last, best)"),
        (["--patience", "0"], "--patience must be at least 1, got 0"),
        (["--patience", "two"], "Invalid value for '--patience'"),
        (["--keep", "best"], "--keep best chooses an epoch on a validation split, and dataset 'mnist' has"),
        (["--patience", "5"], "--patience chooses an epoch on a validation split"),
        (["--keep", "best", "--patience", "5"], "--keep best and --patience choose an epoch on a validation"),
    ],
)
def test_bad_keep_and_patience_flags_are_one_line_and_write_nothing(argv, expected, capsys, in_tmp):
    code, out, err = run(capsys, "train", "--epochs", "1", "--limit-train", "500", *argv)
    assert code == 2 and out == "" and expected in one_error_line(err), err
    assert not Path("runs").exists()


def test_a_config_file_names_its_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("keep: best\npatience: 4\n")
    message = f"{path}: key 'keep: best' and key 'patience' choose an epoch on a validation split"
    with pytest.raises(UsageError, match=message):
        load_config_file(path)
    path.write_text("keep: best\npatience: 4\ndata_options: {val: 1000}\n")
    config = load_config_file(path)
    assert (config.keep, config.patience) == ("best", 4)
    path.write_text("patience: 2.5\n")
    with pytest.raises(UsageError, match="key 'patience' must be int or null, got 2.5"):
        load_config_file(path)
    path.write_text("keep: 1\n")
    with pytest.raises(UsageError, match="key 'keep' must be str, got 1"):
        load_config_file(path)


def test_the_dataset_s_own_validation_split_needs_no_option():
    TrainConfig(data="binarized-mnist", keep="best", patience=3).validate()


def test_the_flags_reach_config_yaml(stopped):
    config = load_config_file(stopped / "config.yaml")
    assert (config.keep, config.patience, config.data_options["val"]) == ("best", PATIENCE, "200")


def test_a_run_without_them_keeps_the_last_epoch(small_run):
    history = rows(small_run)
    assert read_header(small_run / "model.safetensors")["metrics"] == history[-1]
