"""Every device this machine has (the CPU always; CUDA and MPS when present, skipped cleanly
otherwise): training with every likelihood and precision, eval and encode against the CPU's
numbers, exact resume, and --compile. `bench/gpu_check.sh` runs these on a GPU:
`pytest -m device -k cuda`."""

from __future__ import annotations

import collections
import math

import pytest
import torch
from test_runs import SignalAt, same_weights, small_config

from vaecli.encoding import ImageEncoder
from vaecli.evaluation import evaluate
from vaecli.modelfile import load_model
from vaecli.train import TrainingInterrupted, train


def _present(name: str) -> bool:
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        return torch.backends.mps.is_available()
    return True


DEVICES = [
    pytest.param(name, marks=pytest.mark.skipif(not _present(name), reason=f"no {name} device here"))
    for name in ("cpu", "cuda", "mps")
]
LIKELIHOODS = [
    ("bernoulli", {}),
    ("gaussian", {"sigma": "pixel"}),
    ("gaussian", {"sigma": "learned"}),
    ("categorical", {"bins": 16}),
    ("pixelcnn", {}),
]
LIKELIHOOD_IDS = ["bernoulli", "gaussian-pixel", "gaussian-learned", "categorical", "pixelcnn"]
pytestmark = [pytest.mark.device, pytest.mark.slow]
TINY = {"epochs": 1, "limit_train": 512, "limit_test": 128, "batch_size": 128}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["auto", "bf16", "16-mixed"])
@pytest.mark.parametrize("likelihood, options", LIKELIHOODS, ids=LIKELIHOOD_IDS)
def test_training_with_every_likelihood_and_precision(
    mnist_root, tmp_path, device, precision, likelihood, options
):
    if device == "mps" and precision == "16-mixed":
        pytest.skip("MPS has no float16 gradient scaler")
    options = {"precision": precision, "likelihood": likelihood, "likelihood_options": options, **TINY}
    config = small_config(mnist_root, tmp_path / "run", device=device, **options)
    metrics = train(config).metrics[-1]
    assert all(math.isfinite(metrics[key]) for key in ("train_neg_elbo", "test_neg_elbo", "test_kl"))
    assert "skipped_steps" not in metrics
    model, _ = load_model(tmp_path / "run")  # (weights and optimiser state stay float32 in every mode)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_eval_and_encode_agree_with_the_cpu(small_run, mnist_root, device):
    from vaecli.datasets import mnist
    from vaecli.evaluation import TEST_PREPARE_SEED, prepare_fixed

    reports = {}
    for where in ("cpu", device):
        model, _ = load_model(small_run, where)
        images = mnist(mnist_root, "test").images[:64].to(where)
        data = prepare_fixed(model.likelihood, images, TEST_PREPARE_SEED)
        reports[where] = evaluate(model, data, k=50, seed=0)
    # Different devices draw different noise from one seed: the estimates agree within their error.
    cpu, there = reports["cpu"], reports[device]
    assert abs(cpu.neg_log_px - there.neg_log_px) < 4 * (cpu.neg_log_px_stderr + 0.05)
    assert cpu.active_units == there.active_units or device != "cpu"

    images = mnist(mnist_root, "test").images[:32]
    mu_cpu, logvar_cpu = ImageEncoder.load(small_run, "cpu").encode(images)
    mu, logvar = ImageEncoder.load(small_run, device).encode(images)
    torch.testing.assert_close(mu, mu_cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logvar, logvar_cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_an_interrupted_run_resumes_to_the_same_weights(mnist_root, tmp_path, device):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(small_config(mnist_root, straight, device=device, epochs=2))
    with pytest.raises(TrainingInterrupted):
        train(small_config(mnist_root, stopped, device=device, epochs=2), SignalAt(epoch=1, step=7))
    train(small_config(mnist_root, stopped, device=device, epochs=2), resume=True)
    assert same_weights(straight, stopped)


@pytest.mark.parametrize("device", DEVICES[1:])  # (the CPU's --compile: test_distributed)
def test_compile_trains_to_the_weights_of_eager(mnist_root, tmp_path, device):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(small_config(mnist_root, eager, device=device, precision="32", epochs=2))
    train(small_config(mnist_root, compiled, device=device, precision="32", epochs=2, compile=True))
    from safetensors.torch import load_file

    a, b = load_file(str(eager / "model.safetensors")), load_file(str(compiled / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-3, rtol=2e-3)


def test_compile_captures_cuda_graphs_with_the_batch_inside_on_cuda_only():
    from vaecli.distributed import Ranks
    from vaecli.training.compiling import batch_in_graph, compile_options

    cuda, cpu, mps = torch.device("cuda", 0), torch.device("cpu"), torch.device("mps")
    assert compile_options(cuda)["triton.cudagraphs"]
    assert not any("cudagraphs" in key for key in {**compile_options(cpu), **compile_options(mps)})
    assert all(compile_options(d)["fallback_random"] for d in (cuda, cpu, mps))  # (eager's draws)
    assert batch_in_graph(cuda, Ranks()) and not batch_in_graph(cuda, Ranks(rank=0, world_size=2))
    assert not batch_in_graph(cpu, Ranks()) and not batch_in_graph(mps, Ranks())


@pytest.mark.parametrize("device", DEVICES[1:2])
def test_a_compiled_step_on_cuda_replays_graphs_and_waits_for_nothing(mnist_root, tmp_path, device):
    # Steps 4 to 7 of a compiled run: the forward pass (the gather, binarisation and noise in it)
    # and its backward are CUDA graph replays, so none of their ops is dispatched one by one, and
    # no scalar is read back from the device.
    from test_step_waits import ProfileSteps, _waits
    from torch.profiler import ProfilerActivity

    probe = ProfileSteps(3, 7, (ProfilerActivity.CPU, ProfilerActivity.CUDA))  # (CUDA: runtime calls)
    steps = {**TINY, "limit_train": 10 * TINY["batch_size"]}  # (one batch size: no second graph)
    train(small_config(mnist_root, tmp_path / "run", device=device, compile=True, **steps), probe)
    counts = collections.Counter(event.name for event in probe.profiler.events())
    assert probe.steps == 4 and _waits(probe.reads) == {}
    assert counts["cudaGraphLaunch"] >= 2 * probe.steps, counts.most_common(20)
    assert not [
        op for op in ("aten::randn", "aten::randint", "aten::index_select", "aten::addmm") if counts[op]
    ]
