"""Robust runs: config files, checkpoints and exact resume, interrupts, NaN guards, disk errors."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vaecli import likelihoods
from vaecli.checkpoint import CHECKPOINT_FILE
from vaecli.checkpoint import FORMAT as CHECKPOINT_FORMAT
from vaecli.cli import main
from vaecli.config import TrainConfig, load_config_file
from vaecli.errors import UsageError, VaeError
from vaecli.fileio import atomic_path
from vaecli.runs import LOCK_FILE, run_folder_lock
from vaecli.train import TrainingInterrupted, train

ROOT = Path(__file__).resolve().parents[1]
VAE = str(Path(sys.executable).parent / "vae")
SMALL = {"limit_train": 1500, "limit_test": 300, "latent_dim": 4, "arch_options": {"hidden": "32"}}


def small_config(mnist_root: Path, out: Path, **overrides) -> TrainConfig:
    settings = {"data_dir": str(mnist_root), "epochs": 3, "batch_size": 100, "device": "cpu", **SMALL}
    return TrainConfig(out=str(out), **{**settings, **overrides})


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


class SignalAt:
    """An observer that sends this process a real signal after step ``step`` of ``epoch``."""

    def __init__(self, epoch: int, step: int, signum: int = signal.SIGINT) -> None:
        self.target, self.epoch, self.signum = (epoch, step), 0, signum

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int) -> None:
        if (self.epoch, step) == self.target:
            os.kill(os.getpid(), self.signum)

    def on_epoch_end(self, metrics: dict) -> None:
        pass


class CrashAt(SignalAt):
    """Simulates a machine dying after a step: an exception no handler expects."""

    def on_step(self, step: int) -> None:
        if (self.epoch, step) == self.target:
            raise SystemError("power cut")


@pytest.fixture(scope="module")
def uninterrupted(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    train(small_config(mnist_root, out))
    return out


def test_interrupt_then_resume_gives_the_same_weights(mnist_root, tmp_path, uninterrupted):
    out = tmp_path / "run"
    with pytest.raises(
        TrainingInterrupted, match=r"SIGINT: stopped at epoch 2, step 6 of 15.*--resume"
    ) as info:
        train(small_config(mnist_root, out), SignalAt(epoch=2, step=6))
    assert info.value.exit_code == 130
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    result = train(small_config(mnist_root, out), resume=True)
    assert [m["epoch"] for m in result.metrics] == [1, 2, 3]
    assert same_weights(out, uninterrupted)
    straight = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_neg_elbo", "train_reconstruction", "train_kl"):
        assert [m[key] for m in resumed] == [m[key] for m in straight]


def test_crash_after_a_step_checkpoint_resumes_exactly(mnist_root, tmp_path, uninterrupted):
    out = tmp_path / "run"
    with pytest.raises(SystemError):
        train(small_config(mnist_root, out, checkpoint_every=4), CrashAt(epoch=2, step=10))
    assert not list(out.glob(".*.tmp"))  # nothing half-written
    train(small_config(mnist_root, out, checkpoint_every=4), resume=True)  # from step 8 of epoch 2
    assert same_weights(out, uninterrupted)


def test_a_weight_decayed_run_resumes_exactly_and_leaves_the_prior_undecayed(mnist_root, tmp_path):
    """--weight-decay makes two parameter groups (the layers' weights, the rest): a checkpoint
    holds both, and a crashed run goes on from it bit for bit."""
    decayed = {"weight_decay": 0.5, "prior": "vamp", "prior_options": {"k": 5}}
    straight, out = tmp_path / "straight", tmp_path / "run"
    train(small_config(mnist_root, straight, **decayed))
    with pytest.raises(SystemError):
        train(small_config(mnist_root, out, checkpoint_every=4, **decayed), CrashAt(epoch=2, step=10))
    train(small_config(mnist_root, out, checkpoint_every=4, **decayed), resume=True)
    assert same_weights(out, straight)
    with safe_open(str(out / CHECKPOINT_FILE), framework="pt") as f:
        groups = json.loads(f.metadata()[CHECKPOINT_FORMAT])["optimizer_param_groups"]
    assert [(g["weight_decay"], g["decoupled_weight_decay"]) for g in groups] == [(0.5, True), (0.0, True)]
    weights = load_file(str(out / "model.safetensors"))
    decayed_ids = set(groups[0]["params"])
    assert len(decayed_ids) == len([k for k in weights if k.endswith(".weight") and "prior" not in k])
    assert load_config_file(out / "config.yaml").weight_decay == 0.5


def test_sigterm_checkpoints_and_exits_143(mnist_root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="SIGTERM") as info:
        train(small_config(mnist_root, out), SignalAt(epoch=1, step=3, signum=signal.SIGTERM))
    assert info.value.exit_code == 143 and (out / CHECKPOINT_FILE).is_file()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers are put back


@pytest.mark.slow
@pytest.mark.parametrize("model", ["conv", "hierarchical"])
def test_a_convolutional_run_resumes_exactly_with_its_channels_last_weights(model, mnist_root, tmp_path):
    """On the CPU the convolutions' weights are channels-last, and so are Adam's moments of them;
    a checkpoint holds both contiguous, and the fused step reads weight and moments as flat
    arrays: the moments must take their weights' layout again on resume, or each weight is
    updated with another entry's moments (the runs would part from the first resumed step)."""
    hierarchy = {"model": "hierarchical", "arch_options": {}, "latent_dim": 32}
    parts = {"arch": "conv"} if model == "conv" else {**hierarchy, "model_options": {"width": "16"}}
    settings = {"epochs": 2, "limit_train": 600, "checkpoint_every": 3, **parts}
    straight, out = tmp_path / "straight", tmp_path / "resumed"
    train(small_config(mnist_root, straight, **settings))
    with pytest.raises(SystemError):
        train(small_config(mnist_root, out, **settings), CrashAt(epoch=2, step=4))
    train(small_config(mnist_root, out, **settings), resume=True)  # from step 3 of epoch 2
    assert same_weights(out, straight)


def test_resume_refuses_a_folder_without_checkpoint(mnist_root, tmp_path):
    (tmp_path / "config.yaml").write_text("epochs: 2\n")
    with pytest.raises(VaeError, match="has no checkpoint.safetensors"):
        train(small_config(mnist_root, tmp_path), resume=True)


def _nan_at(monkeypatch, call: int, where: str = "reconstruction") -> None:
    calls = {"n": 0}
    original = likelihoods.Bernoulli.log_prob

    def log_prob(self, x, params):
        calls["n"] += 1
        value = original(self, x, params)
        return value * float("nan") if self.training and calls["n"] == call else value

    monkeypatch.setattr(likelihoods.Bernoulli, "log_prob", log_prob)


def test_nan_stops_with_the_term_epoch_and_step_and_keeps_the_checkpoint(mnist_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_at(monkeypatch, call=15 + 1 + 5)  # epoch 1: 15 steps and 1 test batch; then step 5
    with pytest.raises(VaeError, match=r"non-finite reconstruction at epoch 2, step 5: training stopped"):
        train(small_config(mnist_root, out))
    checkpoint = (out / CHECKPOINT_FILE).read_bytes()
    assert load_file(str(out / CHECKPOINT_FILE))  # the epoch-1 checkpoint, intact
    assert json.loads((out / "metrics.jsonl").read_text())["epoch"] == 1
    assert checkpoint == (out / CHECKPOINT_FILE).read_bytes()


def test_nan_skip_counts_skipped_batches(mnist_root, tmp_path, monkeypatch):
    _nan_at(monkeypatch, call=3)
    result = train(small_config(mnist_root, tmp_path / "run", epochs=1, on_nan="skip"))
    assert result.metrics[0]["skipped_steps"] == 1
    assert all(
        torch.isfinite(v).all() for v in load_file(str(tmp_path / "run" / "model.safetensors")).values()
    )


class _NanGradient(torch.autograd.Function):
    """The identity, whose gradient is all nan: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_a_nan_gradient_under_a_finite_loss_is_caught_before_the_step(mnist_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = likelihoods.Bernoulli.log_prob

    def log_prob(self, x, params):
        calls["n"] += 1
        return original(self, x, _NanGradient.apply(params) if calls["n"] == 3 else params)

    monkeypatch.setattr(likelihoods.Bernoulli, "log_prob", log_prob)
    with pytest.raises(VaeError, match=r"non-finite gradient at epoch 1, step 3: training stopped"):
        train(small_config(mnist_root, tmp_path / "stop", epochs=1))
    calls["n"] = 0
    result = train(small_config(mnist_root, tmp_path / "skip", epochs=1, on_nan="skip"))
    assert result.metrics[0]["skipped_steps"] == 1
    assert all(
        torch.isfinite(v).all() for v in load_file(str(tmp_path / "skip" / "model.safetensors")).values()
    )


def test_disk_error_while_saving_leaves_the_old_model(mnist_root, tmp_path, monkeypatch):
    import vaecli.modelfile

    out, saved, real_write = tmp_path / "run", [], vaecli.modelfile.write_bytes_atomic

    def full_disk_on_second_save(path, data, sync=True):
        if saved:
            with atomic_path(path) as tmp:  # the disk fills up half-way through the file
                tmp.write_bytes(data[: len(data) // 2])
                raise OSError(28, "No space left on device")
        real_write(path, data, sync)
        saved.append(Path(path).read_bytes())

    monkeypatch.setattr(vaecli.modelfile, "write_bytes_atomic", full_disk_on_second_save)
    with pytest.raises(VaeError, match=r"cannot write .*model.safetensors: No space left on device"):
        train(small_config(mnist_root, out, epochs=2))
    assert (out / "model.safetensors").read_bytes() == saved[0]  # epoch 1's model, whole
    assert not list(out.glob(".*.tmp"))


def test_disk_error_in_the_cli_is_one_line(mnist_root, tmp_path, monkeypatch, capsys):
    import vaecli.modelfile

    def full_disk(path, data, sync=True):
        with atomic_path(path):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(vaecli.modelfile, "write_bytes_atomic", full_disk)
    argv = ["train", "--data-dir", str(mnist_root), "--epochs", "1", "--limit-train", "300",
            "--limit-test", "100", "--hidden", "16", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vae: error: cannot write {tmp_path / 'run' / 'model.safetensors'}: No space left on device"
    ]
    assert not (tmp_path / "run" / "model.safetensors").exists()


# --- config files ---------------------------------------------------------------------------


EXAMPLE_CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


def test_example_configs_load():
    assert EXAMPLE_CONFIGS
    for path in EXAMPLE_CONFIGS:
        assert isinstance(load_config_file(path), TrainConfig)


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.stem)
def test_example_configs_train_as_shipped(path, mnist_root, tmp_path, capsys):
    """Each shipped config builds and trains its model, prior and options (one short epoch)."""
    out = tmp_path / "run"
    code = main([
        "train", "--config", str(path), "--data-dir", str(mnist_root), "--out", str(out), "--device", "cpu",
        "--epochs", "1", "--limit-train", "500", "--limit-test", "100", "-q",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    recorded = load_config_file(out / "config.yaml")
    shipped = load_config_file(path)
    for key, value in vars(shipped).items():  # the run records every option, defaults too
        if key in ("epochs", "out", "data_dir", "device", "limit_train", "limit_test"):
            continue
        kept = getattr(recorded, key)
        assert ({name: kept[name] for name in value} if isinstance(value, dict) else kept) == value, key
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and math.isfinite(rows[-1]["test_neg_elbo"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: 3\nepoch: 4\n", "run.yaml: unknown key 'epoch'"),
        ("epochs: three\n", "run.yaml: key 'epochs' must be int, got 'three'"),
        ("epochs: 2.5\n", "run.yaml: key 'epochs' must be int, got 2.5"),
        ("lr: fast\n", "run.yaml: key 'lr' must be float or int, got 'fast'"),
        ("force: 1\n", "run.yaml: key 'force' must be bool, got 1"),
        ("arch_options: 512\n", "run.yaml: key 'arch_options' must be mapping, got 512"),
        ("epochs: 0\n", "run.yaml: key 'epochs' must be at least 1, got 0"),
        ("lr_schedule: linear\n", "run.yaml: key 'lr_schedule': unknown 'linear'"),
        ("- epochs\n", "run.yaml: expected a mapping"),
        ("epochs: [1\n", "run.yaml: not valid YAML at line"),
    ],
)
def test_bad_config_files_name_the_key_and_the_file(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.chdir(tmp_path)
    Path("run.yaml").write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        load_config_file("run.yaml")
    assert main(["train", "--config", "run.yaml", "--out", "r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.yaml" in err[0]
    assert not Path("r").exists()


def test_config_file_with_overrides_and_config_yaml_reruns_exactly(mnist_root, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data_dir: {mnist_root}\nlimit_train: 1000\nlimit_test: 200\nlatent_dim: 3\n"
        "arch_options:\n  hidden: '24'\nepochs: 5\nbatch_size: 100\ndevice: cpu\n"
    )
    first = tmp_path / "first"
    assert main(["train", "--config", str(config), "--epochs", "2", "-q", "--out", str(first)]) == 0
    written = load_config_file(first / "config.yaml")
    assert written.epochs == 2 and written.latent_dim == 3
    assert written.arch_options == {"hidden": "24", "pixel_features": 16, "activation": "elu"}  # defaults too
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.yaml"), "-q", "--out", str(again)]) == 0
    assert same_weights(first, again)
    capsys.readouterr()


def test_every_train_flag_feeds_a_config_key():
    """A flag that a --config file's settings could not take would be dropped there without a
    word (--model-opt was, until it was named in FLAG_FEEDS)."""
    import dataclasses

    import typer.main

    from vaecli.cli.app import app
    from vaecli.cli.common import FLAG_FEEDS

    keys = {field.name for field in dataclasses.fields(TrainConfig)}
    flags = [param.name for param in typer.main.get_command(app).commands["train"].params]
    not_settings = {"config", "resume", "nproc", "quiet"}  # (the settings' source, processes, output)
    assert [flag for flag in flags if FLAG_FEEDS.get(flag, flag) not in keys | not_settings] == []


def test_option_flags_add_to_a_config_files_options(mnist_root, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data_dir: {mnist_root}\nlimit_train: 300\nlimit_test: 100\nepochs: 1\ndevice: cpu\n"
        "model: hierarchical\nmodel_options:\n  cells: dense\n  width: 8\n  groups: 1,1\n"
        "arch_options: {}\n"
    )
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--model-opt", "posterior=residual", "--model-opt", "width=16"]
    assert main([*argv, "--prior-opt", "k=3", "--prior", "vamp", "-q", "--out", str(out)]) == 0
    written = load_config_file(out / "config.yaml")
    assert {k: written.model_options[k] for k in ("cells", "width", "groups", "posterior")} == {
        "cells": "dense", "width": 16, "groups": "1,1", "posterior": "residual"}  # fmt: skip
    assert written.prior_options == {"k": 3}
    capsys.readouterr()


def test_resume_cli_bad_input(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "is not a vaecli run folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--config", "x.yaml"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["train", "--checkpoint-every", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--checkpoint-every must be at least 1" in capsys.readouterr().err
    assert main(["train", "--on-nan", "ignore", "--out", str(tmp_path / "r")]) == 2
    assert "--on-nan: unknown 'ignore'" in capsys.readouterr().err


# --- real signals to a real process ---------------------------------------------------------


def _start(argv: list[str], mnist_root: Path) -> subprocess.Popen:
    env = {**os.environ, "VAECLI_DATA_DIR": str(mnist_root)}
    return subprocess.Popen([VAE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text().strip()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training never finished an epoch"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigint_in_a_real_process_then_resume_matches(mnist_root, tmp_path):
    args = ["--epochs", "3", "--limit-train", "5000", "--limit-test", "300", "--hidden", "32"]
    args += ["--latent-dim", "4"]
    straight = tmp_path / "straight"
    assert subprocess.run([VAE, "train", *args, "-q", "--out", str(straight)], capture_output=True,
                          env={**os.environ, "VAECLI_DATA_DIR": str(mnist_root)}).returncode == 0  # fmt: skip
    run = tmp_path / "run"
    process = _start(["train", *args, "--out", str(run)], mnist_root)
    _wait_for(run / "metrics.jsonl", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "continue with: vae train --resume" in err.strip().splitlines()[-1]
    resumed = subprocess.run([VAE, "train", "--resume", str(run)], capture_output=True, text=True,
                             env={**os.environ, "VAECLI_DATA_DIR": str(mnist_root)})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(run, straight)


@pytest.mark.slow
def test_second_sigint_exits_at_once_and_corrupts_nothing(mnist_root, tmp_path):
    run = tmp_path / "run"
    args = ["--epochs", "20", "--limit-train", "5000", "--limit-test", "300", "--hidden", "32"]
    process = _start(["train", *args, "--checkpoint-every", "1", "--out", str(run)], mnist_root)
    _wait_for(run / "metrics.jsonl", process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    assert not list(run.glob(".*.tmp")) and not list(run.glob("samples/.*.tmp"))
    for name in ("model.safetensors", CHECKPOINT_FILE):
        assert load_file(str(run / name))  # whatever is there is whole


def test_config_yaml_records_the_architecture_defaults(mnist_root, uninterrupted):
    saved = load_config_file(uninterrupted / "config.yaml")
    assert saved.arch_options == {"hidden": "32", "pixel_features": 16, "activation": "elu"}


def test_a_run_begun_by_the_previous_format_resumes_with_its_relu(mnist_root, tmp_path):
    # Before format 2, config.yaml held only the options given and the MLP was always ReLU.
    relu = {**SMALL["arch_options"], "activation": "relu"}
    straight, old = tmp_path / "straight", tmp_path / "old"
    train(small_config(mnist_root, straight, arch_options=relu))
    with pytest.raises(TrainingInterrupted):
        train(small_config(mnist_root, old, arch_options=relu), SignalAt(epoch=2, step=6))
    config = (old / "config.yaml").read_text().replace("activation: relu", "")
    (old / "config.yaml").write_text(config)
    checkpoint = old / CHECKPOINT_FILE
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
    header = json.loads(metadata[CHECKPOINT_FORMAT])
    tensors = load_file(str(checkpoint))
    save_file(
        tensors, str(checkpoint), {**metadata, CHECKPOINT_FORMAT: json.dumps({**header, "format_version": 1})}
    )
    resumed = load_config_file(old / "config.yaml")
    assert "activation" not in resumed.arch_options
    train(resumed, resume=True)
    assert same_weights(old, straight)


def test_a_run_begun_before_the_output_offset_resumes_without_one(mnist_root, tmp_path, monkeypatch):
    # Checkpoints before format 3 hold no output offset: such a run trained with a zero one, and
    # resumed, goes on with a zero one to the weights it would have reached.
    straight, old = tmp_path / "straight", tmp_path / "old"
    with monkeypatch.context() as patch:
        patch.setattr("vaecli.models.VAE.start_from_data", lambda model, images: None)
        train(small_config(mnist_root, straight))
        with pytest.raises(TrainingInterrupted):
            train(small_config(mnist_root, old), SignalAt(epoch=2, step=6))
    checkpoint = old / CHECKPOINT_FILE
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
    header = json.loads(metadata[CHECKPOINT_FORMAT])
    assert header["format_version"] == 3
    tensors = {k: v for k, v in load_file(str(checkpoint)).items() if k != "model.output_offset"}
    old_header = json.dumps({**header, "format_version": 2})
    save_file(tensors, str(checkpoint), {**metadata, CHECKPOINT_FORMAT: old_header})
    train(load_config_file(old / "config.yaml"), resume=True)
    assert same_weights(old, straight)
    assert not load_file(str(old / "model.safetensors"))["output_offset"].any()
    # A format-3 checkpoint without the offset is damaged.
    save_file(tensors, str(checkpoint), metadata)
    with pytest.raises(VaeError, match="does not fit this run's model"):
        train(load_config_file(old / "config.yaml"), resume=True)


@pytest.mark.slow
def test_a_run_folder_has_one_writer_at_a_time(mnist_root, tmp_path, capsys):
    """Two `vae train --force --out SAME` at once: the second is refused in one line, naming the
    first's process, and the first's metrics.jsonl stays its own (epochs 1, 2, ... once each)."""
    run = tmp_path / "run"
    args = ["--epochs", "20", "--limit-train", "5000", "--limit-test", "300", "--hidden", "32", "-q"]
    first = _start(["train", *args, "--force", "--out", str(run)], mnist_root)
    _wait_for(run / "metrics.jsonl", first)
    while not (run / CHECKPOINT_FILE).is_file():  # (written after metrics.jsonl)
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = main(["train", "--data-dir", str(mnist_root), *args, "--force", "--out", str(run)])
    resumed = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err.splitlines()
    assert second == 1 and resumed == 1
    holder = f"pid {first.pid} on {socket.gethostname()}"  # (from /proc/locks: nothing is written)
    assert err[0] == (
        f"vae: error: {run} is being written by another vae train ({holder}); "
        "wait for it to end, or choose another --out"
    )
    assert len(err) == 2 and err[1] == err[0]
    assert first.poll() is None  # the first run is untouched and still training
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 143
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))
    # Once the first has ended, the kernel has released its lock: the folder can be written again.
    with run_folder_lock(run):
        assert (run / LOCK_FILE).is_file()


def test_a_failed_start_leaves_no_folder_for_the_lock(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["train", "--data", "folder:" + str(tmp_path / "nothing"), "--out", str(out)]) != 0
    assert not out.exists()
