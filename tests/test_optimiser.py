"""The optimiser: EagerAdam gives torch.optim.Adam's numbers and state dict, bit for bit, and a
run that does not compile never imports torch._dynamo (what EagerAdam and vaecli's own image
grid are for: 2 s each of a start and of a run's end); --weight-decay is torch's AdamW on the
layers' weights and leaves biases and the prior's parameters alone."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaecli.training.optimiser import EagerAdam, make_optimizer


def model_and_batches(seed: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    return net, [torch.randn(16, 6) for _ in range(7)]


def train(kind: type[torch.optim.Adam], fused: bool, state: dict | None = None) -> tuple[list, dict]:
    net, batches = model_and_batches(0)
    optimizer = kind(net.parameters(), lr=0.01, fused=fused)
    if state is not None:
        optimizer.load_state_dict(state)
    for batch in batches:
        optimizer.zero_grad()
        net(batch).square().mean().backward()
        assert torch.is_grad_enabled()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()], optimizer.state_dict()


@pytest.mark.parametrize("fused", [False, True])
def test_eager_adam_is_torch_adam_bit_for_bit(fused):
    ours, our_state = train(EagerAdam, fused)
    theirs, their_state = train(torch.optim.Adam, fused)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert our_state["param_groups"] == their_state["param_groups"]
    for key, values in their_state["state"].items():
        for name, value in values.items():
            assert torch.equal(our_state["state"][key][name], value), (key, name)
    # Each loads the other's state and goes on exactly as the other does.
    again, _ = train(EagerAdam, fused, their_state)
    reference, _ = train(torch.optim.Adam, fused, our_state)
    assert all(torch.equal(a, b) for a, b in zip(again, reference, strict=True))


def test_a_compiled_run_keeps_torch_adam():
    net = torch.nn.Linear(3, 1)
    assert type(make_optimizer(net, 1e-3, compiled=True)) is torch.optim.Adam
    assert type(make_optimizer(net, 1e-3, compiled=False)) is EagerAdam


class WithPrior(torch.nn.Module):
    """Layers of every decayed kind, a bare parameter and a prior with a parameter and a layer."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(6, 4)
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.deconv = torch.nn.ConvTranspose2d(2, 1, 3, padding=1)
        self.start = torch.nn.Parameter(torch.randn(1, 4))
        self.prior = torch.nn.Module()
        self.prior.pseudo_inputs = torch.nn.Parameter(torch.rand(3, 6))
        self.prior.flow = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = self.deconv(self.conv(x[:, :4].reshape(-1, 1, 2, 2)))
        return (
            (self.dense(x) + self.start).sum()
            + image.sum()
            + self.prior.flow(self.dense(self.prior.pseudo_inputs)).sum()
        )


DECAYED = ("dense.weight", "conv.weight", "deconv.weight")


def test_weight_decay_shrinks_only_the_layers_weights_by_one_minus_lr_times_decay():
    """With zero gradients Adam's step is 0, so what moves is the decay alone: the closed form
    w (1 - lr * decay) on the layers' weights, nothing elsewhere."""
    torch.manual_seed(0)
    model = WithPrior()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = make_optimizer(model, 0.1, compiled=False, weight_decay=0.3)
    for steps in (1, 2):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        for name, value in model.named_parameters():
            factor = (1 - 0.1 * 0.3) ** steps if name in DECAYED else 1.0
            torch.testing.assert_close(value.detach(), before[name] * factor, rtol=1e-6, atol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_weight_decay_is_torch_adamw_on_the_weights_and_adam_on_the_rest(fused):
    torch.manual_seed(1)
    ours, theirs = WithPrior(), WithPrior()
    theirs.load_state_dict(ours.state_dict())
    optimizer = make_optimizer(ours, 0.01, compiled=False, weight_decay=0.5)
    named = dict(theirs.named_parameters())
    references = [
        torch.optim.AdamW([named[k] for k in DECAYED], lr=0.01, weight_decay=0.5, fused=fused),
        torch.optim.Adam([p for k, p in named.items() if k not in DECAYED], lr=0.01, fused=fused),
    ]
    for _ in range(5):
        x = torch.randn(8, 6)
        for model, optimizers in ((ours, [optimizer]), (theirs, references)):
            for opt in optimizers:
                opt.zero_grad()
            model(x).square().backward()
            for opt in optimizers:
                opt.step()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_weight_decay_on_a_model_without_layers_says_it_decays_nothing():
    model = torch.nn.Module()
    model.scale = torch.nn.Parameter(torch.ones(3))
    with pytest.warns(UserWarning, match=r"--weight-decay 0.1 decays nothing: the model has no linear"):
        groups = make_optimizer(model, 0.01, compiled=False, weight_decay=0.1).param_groups
    assert [len(g["params"]) for g in groups] == [0, 1]


def test_a_skipped_step_does_not_decay_the_weights():
    """The NaN guard and --grad-skip skip an update on the device through the fused optimiser's
    found_inf: the decay is part of the update and is skipped with it."""
    model = torch.nn.Linear(4, 2)
    optimizer = make_optimizer(model, 0.1, compiled=False, weight_decay=0.5)
    if not optimizer.defaults.get("fused"):
        pytest.skip("no fused Adam on this device: the guard then does not call step() at all")
    before = model.weight.detach().clone()
    model(torch.randn(3, 4)).sum().backward()
    optimizer.found_inf = torch.ones(())
    optimizer.step()
    assert torch.equal(model.weight, before)


def test_step_runs_with_gradients_off_and_keeps_the_callers_mode(monkeypatch):
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = EagerAdam([param], lr=0.1)
    adam_module = importlib.import_module("torch.optim.adam")
    original, seen = adam_module.adam, []

    def spy(*args, **kwargs):
        seen.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(adam_module, "adam", spy)
    param.grad = torch.ones(2)
    optimizer.step()
    assert seen == [False] and torch.is_grad_enabled()
    assert torch.all(param < 1)


RUN_AND_REPORT = """
import sys
from vaecli.cli import main
code = main(sys.argv[1:])
print("dynamo imported:", "torch._dynamo" in sys.modules)
sys.exit(code)
"""


def test_training_and_sampling_never_import_dynamo(in_tmp: Path):
    def vae(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *argv], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = vae("train", "--data", "mnist", "--limit-train", "256", "--limit-test", "128", "--epochs", "2",
              "--latent-dim", "4", "--out", "run", "--quiet")  # fmt: skip
    assert "dynamo imported: False" in out
    assert any((in_tmp / "run" / "samples").iterdir())
    assert "dynamo imported: False" in vae("sample", "run", "--n", "16", "--out", "s.png")
