"""Callbacks around the loop: their hooks and order, TensorBoard's event files read back with
TensorBoard's own reader, and what --resume accepts."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
from test_runs import SignalAt, small_config

from vaecli.cli import main
from vaecli.errors import VaeError
from vaecli.train import Callback, TrainingInterrupted, train

pytestmark = pytest.mark.slow
TINY = ["--epochs", "2", "--limit-train", "1000", "--limit-test", "200", "--hidden", "32",
        "--latent-dim", "4", "--batch-size", "100", "--device", "cpu"]  # fmt: skip


class Recorder(Callback):
    """Notes every hook it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_start(self, run):
        self.calls.append(("start", run.position.epoch, run.position.step, run.run_dir))

    def on_epoch_start(self, epoch, epochs, steps):
        self.calls.append(("epoch", epoch, epochs, steps))

    def on_step(self, step):
        self.calls.append(("step", step))

    def on_epoch_end(self, metrics):
        self.calls.append(("end", metrics["epoch"], sorted(metrics)))

    def on_train_end(self, run):
        self.calls.append(("finish", len(run.history)))


def test_a_callback_sees_every_hook_in_order_and_the_end_even_when_interrupted(mnist_root, tmp_path):
    recorder = Recorder()
    result = train(small_config(mnist_root, tmp_path / "run", epochs=2), [recorder])
    steps = 1500 // 100
    assert recorder.calls[0] == ("start", 1, 0, tmp_path / "run")
    assert recorder.calls[1] == ("epoch", 1, 2, steps)
    assert [c[1] for c in recorder.calls[2 : 2 + steps]] == list(range(1, steps + 1))
    end = recorder.calls[2 + steps]
    assert end[:2] == ("end", 1) and {"train_loss", "train_neg_elbo", "test_neg_elbo"} <= set(end[2])
    assert recorder.calls[-1] == ("finish", 2) and len(result.metrics) == 2
    # Interrupted at epoch 2 step 3, then resumed: the end hook still runs, and a resumed run
    # starts where the checkpoint stands.
    first, second = Recorder(), Recorder()
    with pytest.raises(TrainingInterrupted):
        train(small_config(mnist_root, tmp_path / "cut", epochs=2), [first, SignalAt(2, 3)])
    assert first.calls[-1] == ("finish", 1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back
    train(small_config(mnist_root, tmp_path / "cut", epochs=2), [second], resume=True)
    assert second.calls[0][:3] == ("start", 2, 3) and second.calls[2] == ("step", 4)


def test_tensorboard_event_files_hold_metrics_loss_pictures_and_config(mnist_root, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = ["train", *TINY, "--data-dir", str(mnist_root), "--log", "tensorboard"]
    assert main([*args, "--callback-opt", "tensorboard.every=4", "--out", str(run)]) == 0
    capsys.readouterr()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_neg_elbo", "train_loss", "test_neg_elbo", "test_kl", "images_per_s"):
        split, _, name = key.partition("_")
        tag = f"{split}/{name}" if split in ("train", "test") else f"run/{key}"
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2], tag
        assert [s.value for s in scalars] == pytest.approx([m[key] for m in metrics], rel=1e-6), tag
    losses = events.Scalars("step/loss")  # 10 steps an epoch, logged every 4th of the run's 20
    assert [s.step for s in losses] == [4, 8, 12, 16, 20]
    assert all(100 < s.value < 600 for s in losses)
    assert {"samples", "reconstructions"} <= set(tags["images"])
    assert [i.step for i in events.Images("samples")] == [1, 2]
    samples = events.Images("samples")[0]
    assert samples.width > 28 * 8 and samples.encoded_image_string.startswith(b"\x89PNG")
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "likelihood: bernoulli" in config and "objective: elbo" in config


@pytest.mark.parametrize("option", ["--log", "--callback"])
def test_tensorboard_missing_is_one_line_before_anything_is_written(
    option, mnist_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    code = main(
        ["train", *TINY, "--data-dir", str(mnist_root), option, "tensorboard", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "tensorboard callback (--log or --callback tensorboard) needs the tensorboard package" in err[0]
    assert "pip install 'vaecli[tensorboard]'" in err[0]
    assert not (tmp_path / "r").exists()


def test_resume_refuses_flags_it_cannot_honour_and_says_when_a_run_is_finished(mnist_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(mnist_root), "-q", "--out", str(run)]) == 0
    before = (run / "metrics.jsonl").read_text(), (run / "checkpoint.safetensors").read_bytes()
    for flags, name in [
        (["--epochs", "80"], "--epochs"),
        (["--lr", "0.1"], "--lr"),
        (["--beta", "4"], "--beta"),
        (["--hidden", "64"], "--hidden"),
        (["--force"], "--force"),
    ]:
        capsys.readouterr()
        assert main(["train", "--resume", str(run), *flags]) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{name} cannot change when resuming {run}" in err[0], err
        assert f"--config {run / 'config.yaml'}" in err[0]
    assert "learning-rate schedule" in _error(capsys, ["train", "--resume", str(run), "--epochs", "3"])
    # Where it runs may change; a finished run says so and changes nothing.
    assert main(["train", "--resume", str(run), "--device", "cpu", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run} has finished its 2 epochs: nothing to resume" in err[0]
    assert ((run / "metrics.jsonl").read_text(), (run / "checkpoint.safetensors").read_bytes()) == before


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    main(argv)
    return capsys.readouterr().err


def test_resume_may_add_tensorboard_to_an_interrupted_run(mnist_root, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(small_config(mnist_root, run, epochs=2), SignalAt(2, 2))
    assert main(["train", "--resume", str(run), "--log", "tensorboard", "-q"]) == 0
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [s.step for s in events.Scalars("test/neg_elbo")] == [2]  # the epoch trained after resuming


def test_a_failing_python_callback_propagates_and_the_run_keeps_its_whole_files(mnist_root, tmp_path):
    class Broken(Callback):
        def on_epoch_end(self, metrics):
            raise RuntimeError("disk quota")

    # A callback handed to train() in Python propagates its own exception as it is.
    with pytest.raises(RuntimeError, match="disk quota"):
        train(small_config(mnist_root, tmp_path / "run", epochs=2), [Broken()])
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_callbacks_in_a_config_file_must_map_names_to_options(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("callbacks:\n  tensorboard: 5\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the options of 'tensorboard' must be a mapping" in err[0]
    with pytest.raises(VaeError):
        from vaecli.config import load_config_file

        load_config_file(config)
    assert not Path(tmp_path / "r").exists()
