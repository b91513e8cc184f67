"""Speed and scale: torchrun DDP against one process, precision and compile choices, device logic."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import marginals_neg_elbo
from safetensors.torch import load_file
from test_data_cache import write_folder
from test_runs import SignalAt

from vaecli.checkpoint import CHECKPOINT_FILE
from vaecli.cli import main
from vaecli.config import TrainConfig, load_config_file
from vaecli.distributed import Ranks
from vaecli.errors import UsageError, VaeError
from vaecli.precision import choose_precision
from vaecli.train import TrainingInterrupted, train
from vaecli.training.compiling import DREG_COMPILES
from vaecli.training.step import START

# An uneven batch: 1000 images give 30 batches of 33 and one of 10; two ranks take 16 + 17 of each.
TRAIN = ["train", "--epochs", "2", "--limit-train", "1000", "--limit-test", "200", "--hidden", "64"]
TRAIN += ["--latent-dim", "4", "--batch-size", "33", "--lr-schedule", "cosine", "--device", "cpu", "--quiet"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def vae_env(mnist_root: Path) -> dict[str, str]:
    env = {**os.environ, "VAECLI_DATA_DIR": str(mnist_root)}
    env.pop("WORLD_SIZE", None)
    return env


def run(
    args: list[str], mnist_root: Path, env_extra: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    env = {**vae_env(mnist_root), **(env_extra or {})}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def stop_with_sigterm(args: list[str], out: Path, mnist_root: Path) -> str:
    """Start ``args --out OUT`` (a torchrun job), SIGTERM it once its first checkpoint is written
    (torchrun passes the signal on to every worker) and return its stderr."""
    command = [*args, "--checkpoint-every", "10", "--out", str(out)]
    process = subprocess.Popen(command, env=vae_env(mnist_root), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_FILE).is_file() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=120)[1]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_close_weights(a: Path, b: Path) -> None:
    """Each tensor within 1e-5 of the other's norm, and no entry more than 1e-4 away. Sums over two
    ranks round differently from one, and Adam divides a gradient by its own running size, so a
    weight whose gradient is only ever tiny (a pixel that is rarely on) carries its rounding into
    whole steps: such an entry differs by about 1e-5 while the tensor agrees to 1e-6."""
    x, y = weights(a), weights(b)
    assert x.keys() == y.keys()
    for key in x:
        assert torch.linalg.vector_norm(x[key] - y[key]) <= 1e-5 * torch.linalg.vector_norm(y[key]), key
        torch.testing.assert_close(x[key], y[key], rtol=0, atol=1e-4, msg=key)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(mnist_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    done = run([sys.executable, "-m", "vaecli", *TRAIN, "--out", str(out)], mnist_root)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_two_gloo_processes_through_torchrun_equal_one_process(mnist_root, tmp_path, single):
    out = tmp_path / "ddp"
    done = run([*TORCHRUN, "-m", "vaecli", *TRAIN, "--out", str(out)], mnist_root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(out)]  # only rank 0 reports
    assert "warning" not in done.stderr  # (torch 2.14 warns of DDP's broadcast_buffers on every rank)
    assert_close_weights(out, single)
    for ours, theirs in zip(metrics(out), metrics(single), strict=True):
        for key in ("train_neg_elbo", "test_neg_elbo", "test_kl"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())


def test_what_c_code_prints_while_joining_the_group_goes_to_stderr():
    """The gloo of torch 2.8 prints its connection report on file descriptor 1 (C++ stdio, which a
    pipe buffers); here C's printf stands in for it, so the test holds on any torch."""
    program = (
        "import ctypes, os\n"
        "from vaecli.distributed import printed_to_stderr\n"
        "libc = ctypes.CDLL(None)\n"
        "with printed_to_stderr():\n"
        "    libc.printf(b'[Gloo] Rank 0 is connected\\n')\n"  # buffered: flushed before fd 1 is back
        "    os.write(1, b'raw write\\n')\n"
        "    print('python print', flush=True)\n"
        "print('/runs/result')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # (it unbuffers C's stdout too)
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/runs/result\n"
    assert sorted(done.stderr.splitlines()) == ["[Gloo] Rank 0 is connected", "python print", "raw write"]


@pytest.mark.slow
def test_two_processes_streaming_a_cached_folder_equal_one_process(mnist_root, tmp_path):
    """Under torchrun every rank streams the same block shuffle of the cache file (each gathers
    the whole batch and trains on its part), so the run is the one-process run's."""
    write_folder(tmp_path / "photos", 200)
    env = {"VAECLI_DATA_CACHE": str(tmp_path / "cache")}
    args = ["train", "--data", f"folder:{tmp_path / 'photos'}", "--data-opt", "size=8x8", "--epochs", "2"]
    args += ["--batch-size", "33", "--hidden", "16", "--latent-dim", "2", "--stream", "on", "--device", "cpu"]
    for name, launch in (("one", [sys.executable]), ("two", TORCHRUN)):  # one writes the cache, two reads it
        done = run(
            [*launch, "-m", "vaecli", *args, "--quiet", "--out", str(tmp_path / name)], mnist_root, env
        )
        assert done.returncode == 0, done.stderr
        assert list((tmp_path / "cache").rglob("*.safetensors"))
    assert_close_weights(tmp_path / "two", tmp_path / "one")
    for ours, theirs in zip(metrics(tmp_path / "two"), metrics(tmp_path / "one"), strict=True):
        assert ours["test_neg_elbo"] == pytest.approx(theirs["test_neg_elbo"], rel=1e-5)


@pytest.mark.slow
def test_nproc_run_stopped_by_sigterm_resumes_in_distributed_mode(mnist_root, tmp_path):
    args = [sys.executable, "-m", "vaecli", *TRAIN, "--epochs", "3", "--limit-train", "3000", "--nproc", "2"]
    straight = tmp_path / "straight"
    done = run([*args, "--out", str(straight)], mnist_root)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "cut"
    stderr = stop_with_sigterm(args, out, mnist_root)
    assert "SIGTERM: stopped at epoch" in stderr and "--resume" in stderr, stderr
    done = run([sys.executable, "-m", "vaecli", "train", "--resume", str(out), "--nproc", "2"], mnist_root)
    assert done.returncode == 0, done.stderr
    x, y = weights(out), weights(straight)
    assert all(torch.equal(x[k], y[k]) for k in x)  # the same two ranks: the very same numbers
    assert [m["train_neg_elbo"] for m in metrics(out)] == [m["train_neg_elbo"] for m in metrics(straight)]


def load_checkpoint_header(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["vaecli-checkpoint"]


def test_nproc_bad_values_say_one_line(capsys, monkeypatch):
    assert main(["train", "--nproc", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--nproc must be at least 1, got 0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "under torchrun" in err


def test_ranks_from_torchrun_environment():
    assert Ranks.from_env({}) == Ranks(0, 1, 0) and not Ranks.from_env({}).distributed
    ranks = Ranks.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert ranks == Ranks(3, 4, 1) and ranks.distributed and not ranks.is_main
    for bad in ({"WORLD_SIZE": "two"}, {"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "-1", "WORLD_SIZE": "2"}):
        with pytest.raises(UsageError):
            Ranks.from_env(bad)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [1, 7, 33, 128])
def test_shards_cover_a_batch_once_and_evenly(world, n):
    parts = [Ranks(r, world).shard(n) for r in range(world)]
    covered = [i for part in parts for i in range(n)[part]]
    assert covered == list(range(n))
    sizes = [len(range(n)[part]) for part in parts]
    assert max(sizes) - min(sizes) <= 1


def test_each_rank_takes_its_own_gpu_without_pretending_one_exists():
    cuda = torch.device("cuda")
    assert Ranks(1, 2, 1).device(cuda, cuda_count=2) == torch.device("cuda", 1)
    assert Ranks(0, 1, 0).device(torch.device("cpu"), cuda_count=0) == torch.device("cpu")
    assert Ranks(1, 2, 1).device(torch.device("cpu"), cuda_count=0) == torch.device("cpu")
    with pytest.raises(VaeError, match="local rank 2 has no GPU"):
        Ranks(2, 3, 2).device(cuda, cuda_count=2)
    with pytest.raises(UsageError, match="not mps"):
        Ranks(0, 2, 0).device(torch.device("mps"))


def test_precision_choice_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_precision("auto", cpu).name == "32"
    assert choose_precision("auto", cuda, cuda_bf16=True).autocast_dtype == torch.bfloat16
    assert choose_precision("auto", cuda, cuda_bf16=False).name == "32"
    mixed = choose_precision("16-mixed", cuda, cuda_bf16=True)
    assert mixed.autocast_dtype == torch.float16 and mixed.scaled
    assert not choose_precision("bf16", cpu).scaled
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        choose_precision("fp8", cpu)


def test_bad_precision_is_one_line_exit_2(capsys, tmp_path):
    assert main(["train", "--precision", "fp8", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "--precision: unknown 'fp8'" in err
    assert not (tmp_path / "r").exists()


def test_yaml_precision_may_be_a_number(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"precision": 32, "compile": False}))
    assert load_config_file(path).precision == "32"
    path.write_text(yaml.safe_dump({"precision": 8}))
    with pytest.raises(UsageError, match="key 'precision': unknown '8'"):
        load_config_file(path)


SMALL = {"limit_train": 1200, "limit_test": 300, "latent_dim": 4, "arch_options": {"hidden": "32"}}


def small(mnist_root: Path, out: Path, **overrides) -> TrainConfig:
    settings = {"data_dir": str(mnist_root), "epochs": 2, "batch_size": 100, "device": "cpu", **SMALL}
    return TrainConfig(out=str(out), **{**settings, **overrides})


def test_float16_with_gradient_scaler_trains_and_resumes_exactly(mnist_root, tmp_path):
    config = {"precision": "16-mixed", "limit_train": 3000}
    straight = train(small(mnist_root, tmp_path / "straight", **config)).metrics
    assert straight[-1]["test_neg_elbo"] < marginals_neg_elbo(mnist_root, 3000, 300) - 8  # it learns
    header = json.loads(load_checkpoint_header(tmp_path / "straight" / CHECKPOINT_FILE))
    scale = header["extra"]["scaler"]["scale"]
    assert 1.0 <= scale <= 65536.0  # the scaler's state travels with the checkpoint
    with pytest.raises(TrainingInterrupted):
        train(small(mnist_root, tmp_path / "cut", **config), SignalAt(epoch=2, step=5))
    train(small(mnist_root, tmp_path / "cut", **config), resume=True)
    x, y = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_bfloat16_autocast_trains_on_the_cpu(mnist_root, tmp_path):
    result = train(small(mnist_root, tmp_path / "bf16", precision="bf16", limit_train=3000, epochs=2))
    # It learns: below the best model that ignores z, where it starts (fp32 ends 12.7 nats below).
    assert result.metrics[-1]["test_neg_elbo"] < marginals_neg_elbo(mnist_root, 3000, 300) - 8
    assert {w.dtype for w in weights(tmp_path / "bf16").values()} == {torch.float32}  # weights stay fp32


@pytest.mark.slow
def test_compiled_training_matches_eager(mnist_root, tmp_path):
    eager = train(small(mnist_root, tmp_path / "eager", epochs=1)).metrics
    compiled = train(small(mnist_root, tmp_path / "compiled", epochs=1, compile=True)).metrics
    for key in ("train_neg_elbo", "test_neg_elbo"):
        assert compiled[0][key] == pytest.approx(eager[0][key], rel=1e-3)


@pytest.mark.slow
def test_compiled_training_compiles_before_its_first_epoch(mnist_root, tmp_path):
    # vae train compiles before its first epoch, for both batch sizes an epoch has (1000 images:
    # 10 batches of 96, then one of 40), so nothing compiles while an epoch runs (torch's dynamo
    # counts each graph it compiles). The compiled run is the same computation as the eager one.
    from torch._dynamo.utils import counters

    class CompilesInEpochs:
        def __init__(self) -> None:
            self.counts: list[int] = []

        def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            self.before = counters["stats"]["unique_graphs"]

        def on_step(self, step: int) -> None: ...

        def on_epoch_end(self, metrics: dict) -> None:
            self.counts.append(counters["stats"]["unique_graphs"] - self.before)

    watch = CompilesInEpochs()
    config = {"limit_train": 1000, "batch_size": 96}
    torch._dynamo.reset()  # forget graphs compiled by earlier tests
    counters.clear()
    train(small(mnist_root, tmp_path / "compiled", compile=True, **config), watch)
    assert counters["stats"]["unique_graphs"] == 2  # one per batch size, both before the epochs
    assert watch.counts == [0, 0]
    train(small(mnist_root, tmp_path / "eager", **config))
    assert_close_weights(tmp_path / "compiled", tmp_path / "eager")


class Echo(torch.nn.Module):
    """A stand-in model that hands back what the step's forward pass feeds it."""

    def forward(self, x, eps, weights=None, dreg=False):
        return x, eps


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_a_step_compiled_whole_gathers_binarises_and_draws_the_noise_as_eager_does(objective, monkeypatch):
    # On CUDA the compiled graph holds the gather, the binarisation and the noise (compiling.
    # batch_in_graph); here the same forward pass is compiled so on the CPU. Inside a graph the
    # exact binarisation draws a second byte for every pixel (wait_free): its bits, and the noise
    # drawn after them, are the ones eager torch draws from the same seed.
    from types import SimpleNamespace

    from vaecli.likelihoods import Bernoulli, uniform_bytes_below_255
    from vaecli.objectives import build_objective
    from vaecli.training import compiling

    monkeypatch.setattr(compiling, "batch_in_graph", lambda device, ranks: True)
    torch._dynamo.reset()
    images = torch.randint(
        0, 256, (500, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    images[:, :, 0] = 255  # (every pixel value, 0 and 255 included)
    model = SimpleNamespace(likelihood=Bernoulli(), noise_dim=lambda: 3)
    chosen = build_objective(objective, {"k": "4"} if objective == "iwae" else {})
    cpu = torch.device("cpu")
    forward = compiling.make_forward(Echo(), model, chosen, Ranks(), choose_precision("32", cpu), cpu, True)
    assert isinstance(forward, torch._dynamo.eval_frame.OptimizedModule)  # (the whole of it compiled)
    indices = torch.randperm(500, generator=torch.Generator().manual_seed(2))[:64]
    torch.manual_seed(7)
    x, eps = forward(images, indices)
    torch.manual_seed(7)
    u = uniform_bytes_below_255((64, 1, 6, 6), None, cpu, wait_free=True)
    expected_eps = torch.randn(eps.shape)
    assert torch.equal(x, (u < images[indices]).float())
    assert torch.equal(eps, expected_eps)
    assert eps.shape == ((64, 3) if objective == "elbo" else (64, 4, 3))


WHOLE_STEP_PARTS = {
    "bernoulli": {},
    "gaussian-learned": {"likelihood": "gaussian", "likelihood_options": {"sigma": "learned"}},
    "gaussian-pixel": {"likelihood": "gaussian", "likelihood_options": {"sigma": "pixel"}},
    "categorical": {"likelihood": "categorical", "likelihood_options": {"bins": 16}},
    "vamp": {"prior": "vamp", "prior_options": {"k": 10}},
    "mog": {"prior": "mog", "prior_options": {"k": 3}},
    "conv": {"architecture": "conv"},
    "hierarchical-dense": {"model": "hierarchical", "model_options": {"cells": "dense", "groups": "1,1"}},
    "hierarchical-conv": {"model": "hierarchical", "model_options": {"groups": "1,1", "width": 8}},
}


@pytest.mark.parametrize("parts", WHOLE_STEP_PARTS.values(), ids=WHOLE_STEP_PARTS.keys())
@pytest.mark.parametrize("objective, options, precision", [("elbo", {}, "32"), ("iwae", {"k": "3"}, "bf16")])
def test_the_whole_forward_pass_is_one_graph_for_every_built_in_part(parts, objective, options, precision):
    # What CUDA compiles whole (compiling.batch_in_graph) traces as one graph, with no break: a
    # break would end the CUDA graph there and run what follows kernel by kernel. (torch's
    # dynamo alone, no compiler: a tenth of a second each.)
    from vaecli.models import ModelSpec, build_model
    from vaecli.objectives import build_objective
    from vaecli.training.step import BatchForward

    model = build_model(ModelSpec(input_shape=(1, 28, 28), latent_dim=4, **parts))
    chosen = build_objective(
        objective, {**options, "dreg": str(model.supports_dreg).lower()} if options else {}
    )
    if chosen.dreg and not DREG_COMPILES:
        pytest.skip(f"torch {torch.__version__} cannot compile DReG (vae train --compile says so)")
    forward = BatchForward(model, model, chosen, Ranks(), choose_precision(precision, torch.device("cpu")))
    images = torch.randint(
        0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    torch._dynamo.reset()
    explained = torch._dynamo.explain(forward)(images, torch.arange(20))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["off", "on"])  # (streamed: the batch gathered on the host)
def test_a_training_run_compiled_whole_matches_eager_and_resumes_exactly(
    mnist_root, tmp_path, monkeypatch, stream
):
    # The whole step in one graph (CUDA's choice) forced on the CPU: one graph per batch size and
    # no graph breaks, the weights of eager training (the dequantising noise and the latent noise
    # drawn by torch's own kernels), and a run cut mid-epoch resumes to the weights of a straight one.
    from torch._dynamo.utils import counters

    from vaecli.training import compiling

    monkeypatch.setattr(compiling, "batch_in_graph", lambda device, ranks: True)
    config = {
        "limit_train": 1000,
        "batch_size": 96,
        "likelihood": "gaussian",
        "likelihood_options": {"sigma": "pixel"},
        "stream": stream,
    }
    torch._dynamo.reset()
    counters.clear()
    train(small(mnist_root, tmp_path / "compiled", compile=True, **config))
    assert counters["stats"]["unique_graphs"] == 2  # one per batch size: nothing outside the graph
    train(small(mnist_root, tmp_path / "eager", **config))
    assert_close_weights(tmp_path / "compiled", tmp_path / "eager")
    with pytest.raises(TrainingInterrupted):
        train(small(mnist_root, tmp_path / "cut", compile=True, **config), SignalAt(epoch=2, step=4))
    train(small(mnist_root, tmp_path / "cut", compile=True, **config), resume=True)
    x, y = weights(tmp_path / "compiled"), weights(tmp_path / "cut")
    assert all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_a_quiet_compiled_run_prints_its_folder_and_nothing_else(mnist_root, tmp_path):
    # (torch's compiler warns "No CUDA runtime is found" on a machine without a GPU: vae keeps
    # that line off a quiet run's stderr)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "vaecli", *TRAIN, "--epochs", "1", "--compile", "--out", str(out)]
    env = {**os.environ, "VAECLI_DATA_DIR": str(mnist_root)}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == (f"{out}\n", "")


def test_compile_without_a_cpp_compiler_fails_before_writing_anything(mnist_root, tmp_path):
    # torch.compile needs a C++ compiler on the CPU. Without one (CXX naming none), --compile fails
    # with one line, exit 1, no run folder, and an old run given --force is still there, intact.
    old = tmp_path / "old"
    done = run([sys.executable, "-m", "vaecli", *TRAIN, "--epochs", "1", "--out", str(old)], mnist_root)
    assert done.returncode == 0, done.stderr
    before = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    for out, force in ((tmp_path / "new", []), (old, ["--force"])):
        args = [sys.executable, "-m", "vaecli", *TRAIN, "--compile", "--out", str(out), *force]
        failed = run(args, mnist_root, env_extra=env)
        assert failed.returncode == 1
        assert failed.stderr.count("\n") == 1 and "--compile" in failed.stderr, failed.stderr
        assert "C++ compiler" in failed.stderr and "train without --compile" in failed.stderr
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == before


@pytest.mark.slow
@pytest.mark.parametrize("stopped", [False, True], ids=["finished", "stopped-by-sigterm"])
def test_ranks_free_ddp_before_leaving_the_process_group(mnist_root, tmp_path, stopped):
    """DDP sits in a reference cycle; left to interpreter shutdown it aborted a rank now and then
    (CI saw it). With the garbage collector off, every rank must still have freed it on leaving,
    whether training finishes or is stopped."""
    out = tmp_path / "run"
    args = [*TORCHRUN, str(Path(__file__).with_name("train_without_gc.py")), *TRAIN]
    if not stopped:
        done = run([*args, "--out", str(out)], mnist_root)
        assert done.returncode == 0, done.stderr
        return
    args[args.index("--limit-train") + 1] = "3000"
    stderr = stop_with_sigterm(args, out, mnist_root)
    assert "SIGTERM: stopped at epoch" in stderr, stderr
    assert "outlived the process group" not in stderr and "terminate called" not in stderr, stderr


def test_compiled_gradients_equal_eager_ones():
    # The model's forward and backward through torch's compiler (its graphs, without generating
    # kernels: a second) give eager's gradients (torch 2.11's lost the in-place ELU's; DReG's are
    # test_objectives.py's).
    from vaecli.models import ModelSpec, build_model
    from vaecli.objectives import build_objective

    chosen = build_objective("elbo", {})
    torch.manual_seed(0)
    spec = ModelSpec(input_shape=(1, 28, 28), latent_dim=4, architecture_options={"hidden": "32"})
    eager = build_model(spec)
    compiled = copy.deepcopy(eager)
    x = (torch.rand(20, 1, 28, 28) < 0.3).float()
    eps = torch.randn((20, 4) if chosen.samples == 1 else (20, chosen.samples, 4))
    torch._dynamo.reset()
    grads = []
    for model, net in ((eager, eager), (compiled, torch.compile(compiled, backend="aot_eager"))):
        terms = net(x, eps, weights=chosen.weights, dreg=chosen.dreg)
        chosen.loss(terms, START).sum().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-4, msg=name)


def test_compiling_dreg_where_torch_cannot_is_one_line_before_writing_anything(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("vaecli.training.compiling.DREG_COMPILES", False)
    out = tmp_path / "r"
    args = [*TRAIN, "--compile", "--iw-samples", "3", "--objective-opt", "dreg=true", "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "cannot compile DReG" in err, err
    assert "train without --compile, or with --objective-opt dreg=false" in err
    assert not out.exists()
