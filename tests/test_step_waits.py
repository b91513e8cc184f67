"""A training step never makes the host wait for the device: torch.profiler finds no scalar read
(`aten::_local_scalar_dense`, what `.item()` and `.tolist()` become) in steady-state steps; the
NaN guard reads the device every READ_EVERY steps, and still stops at the right step with the
weights from before it."""

from __future__ import annotations

import collections

import pytest
import torch
from safetensors.torch import load_file
from test_on_devices import DEVICES
from torch.profiler import ProfilerActivity, profile

from vaecli import likelihoods
from vaecli.checkpoint import CHECKPOINT_FILE
from vaecli.config import TrainConfig
from vaecli.errors import VaeError
from vaecli.train import TrainingInterrupted, train
from vaecli.training.callbacks import Callback
from vaecli.training.step import READ_EVERY

pytestmark = pytest.mark.slow
SCALAR_READ = "aten::_local_scalar_dense"
# The CPU kernels of fused Adam and AdamW (--weight-decay) read their step counters, CPU tensors,
# with .item(): on a CPU that is a read of the process's own memory, and the CUDA kernels take
# them as device tensors.
CPU_ADAM = ("aten::_fused_adam_", "aten::_fused_adamw_")


#: The tensor methods that read a value back to Python (on a GPU each waits for the device).
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


class ProfileSteps(Callback):
    """Profile the steps after ``first`` up to and including ``last`` of the first epoch, and
    count the calls of the tensor methods that read a value back to Python (``.tolist()`` of a
    CPU tensor is no profiled op)."""

    def __init__(self, first: int, last: int, activities: tuple = (ProfilerActivity.CPU,)) -> None:
        self.first, self.last, self.activities = first, last, list(activities)
        self.reads: collections.Counter[str] = collections.Counter()
        self.steps = 0
        self.originals: dict[str, object] = {}

    def _count(self, name: str):
        original = self.originals[name]

        def counted(tensor, *args, **kwargs):
            self.reads[f"Tensor.{name}"] += 1
            return original(tensor, *args, **kwargs)

        return counted

    def on_step(self, step: int) -> None:
        if step == self.first:
            self.profiler = profile(activities=self.activities)
            self.profiler.__enter__()
            self.originals = {name: getattr(torch.Tensor, name) for name in READS}
            for name in READS:
                setattr(torch.Tensor, name, self._count(name))
        elif step == self.last and self.originals:
            for name, original in self.originals.items():
                setattr(torch.Tensor, name, original)
            self.originals = {}
            self.profiler.__exit__(None, None, None)
            self.steps = self.last - self.first
            for event in self.profiler.events():
                if event.name == SCALAR_READ:
                    self.reads[" < ".join(_ancestors(event))] += 1

    def on_train_end(self, run) -> None:
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, original)


def _ancestors(event) -> list[str]:
    names = []
    parent = event.cpu_parent
    while parent is not None:
        names.append(parent.name)
        parent = parent.cpu_parent
    return names


def _config(mnist_root, tmp_path, **options) -> TrainConfig:  # (device: cpu unless given)
    base = dict(data_dir=str(mnist_root), epochs=1, limit_train=3000, limit_test=200, latent_dim=8,
                arch_options={"hidden": "64"}, device="cpu", out=str(tmp_path / "run"))  # fmt: skip
    return TrainConfig(**{**base, **options})


HIERARCHY_WITH_STABILISERS = dict(
    model="hierarchical", model_options={"cells": "dense", "groups": "1,1", "width": "16"}, latent_dim=32,
    arch_options={}, ema=0.9, grad_clip=50.0, grad_skip=1e6,
)  # fmt: skip


def _waits(reads: collections.Counter[str]) -> dict[str, int]:
    return {where: n for where, n in reads.items() if not any(kernel in where for kernel in CPU_ADAM)}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"on_nan": "skip"},
        {"objective": "iwae", "objective_options": {"k": 3}},
        {"precision": "16-mixed"},
        {"likelihood": "categorical", "likelihood_options": {"bins": 8}},
        {"likelihood": "gaussian", "likelihood_options": {"sigma": "learned"}},
        HIERARCHY_WITH_STABILISERS,
        {"weight_decay": 0.05, "prior": "vamp", "prior_options": {"k": 5}},
    ],
    ids=["elbo", "skip", "iwae", "16-mixed", "categorical", "gaussian", "stabilisers", "weight-decay"],
)
@pytest.mark.device
@pytest.mark.parametrize("device", DEVICES)
def test_steady_state_steps_read_no_scalar_from_the_device(mnist_root, tmp_path, options, device):
    if device == "mps" and options.get("precision") == "16-mixed":
        pytest.skip("MPS has no float16 gradient scaler")
    probe = ProfileSteps(3, 7)  # steps 4 to 7: no guard read falls among them
    train(_config(mnist_root, tmp_path, device=device, **options), probe)
    assert probe.steps == 4
    assert _waits(probe.reads) == {}


def test_the_probe_sees_the_guards_own_read(mnist_root, tmp_path):
    # The same profile over the step after which the guard reads the device finds that read:
    # the test above can fail.
    probe = ProfileSteps(READ_EVERY - 1, READ_EVERY + 1)
    train(_config(mnist_root, tmp_path, limit_train=128 * (READ_EVERY + 2), batch_size=128), probe)
    assert probe.steps == 2
    assert sum(_waits(probe.reads).values()) >= 1


class Snapshot(Callback):
    """The weights when training ends, however it ends."""

    def on_train_end(self, run) -> None:
        self.weights = {k: v.clone() for k, v in run.model.state_dict().items()}


def test_a_nan_read_late_still_names_its_step_and_the_weights_are_from_before_it(
    mnist_root, tmp_path, monkeypatch
):
    # Reference: the weights after step 4, from a checkpoint written at an interrupt there.
    reference = tmp_path / "reference"
    with pytest.raises(TrainingInterrupted):
        train(_config(mnist_root, tmp_path, out=str(reference)), _SignalAfter(4))
    before = load_file(str(reference / CHECKPOINT_FILE))

    calls = {"n": 0}
    original = likelihoods.Bernoulli.log_prob

    def log_prob(self, x, params):
        calls["n"] += 1
        value = original(self, x, params)
        return value * float("nan") if self.training and calls["n"] == 5 else value  # step 5

    monkeypatch.setattr(likelihoods.Bernoulli, "log_prob", log_prob)
    snapshot = Snapshot()
    with pytest.raises(VaeError, match=r"non-finite reconstruction at epoch 1, step 5: training stopped"):
        train(_config(mnist_root, tmp_path, out=str(tmp_path / "nan")), snapshot)
    assert READ_EVERY > 5  # (the error was found by a later read, at the epoch's end)
    for name, value in snapshot.weights.items():
        assert torch.equal(value, before[f"model.{name}"]), name


class _SignalAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int) -> None:
        import os
        import signal

        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)
