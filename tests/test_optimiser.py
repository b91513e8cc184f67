"""The optimiser: EagerAdam gives torch.optim.Adam's numbers and state dict, bit for bit, and a
run that does not compile never imports torch._dynamo (what EagerAdam and vaecli's own image
grid are for: 2 s each of a start and of a run's end)."""

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
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert type(make_optimizer(params, 1e-3, compiled=True)) is torch.optim.Adam
    assert type(make_optimizer(params, 1e-3, compiled=False)) is EagerAdam


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
