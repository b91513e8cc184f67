"""Time to quality: wall time until test -ELBO <= 100 nats on binarised MNIST, for `vae train`
with its default recipe and for PyTorch's VAE example loop (see example_vae.py), in one run.

Both are scored the same way after every epoch: the mean single-sample -ELBO of the 10,000
test images, binarised once with vaecli's fixed seed, with fixed reparameterisation noise.
Wall time counts everything after the data are on disk: loading, training and the per-epoch
evaluation (vaecli's also includes writing its run folder).

    VAECLI_DATA_DIR=../shared/data python bench/time_to_quality.py [--target 100] [--max-epochs 100]
        [--precision bf16] [--device cuda]

``--precision`` is vae train's (the example loop is always float32): ``bf16`` shows what a CPU
with bfloat16 instructions gains.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from example_vae import ExampleVAE, example_loader, example_loss, train_epoch

from vaecli.config import PRECISIONS
from vaecli.datasets import mnist, resolve_data_dir
from vaecli.evaluation import EVAL_SEED, TEST_PREPARE_SEED, prepare_fixed
from vaecli.likelihoods import Bernoulli
from vaecli.train import TrainConfig, train


@torch.no_grad()
def example_test_neg_elbo(model: ExampleVAE, test_x: torch.Tensor) -> float:
    model.eval()
    generator = torch.Generator(device=test_x.device).manual_seed(EVAL_SEED)
    total = 0.0
    for x in test_x.split(1000):
        recon, mu, logvar = model(x, generator)
        total += example_loss(recon, x, mu, logvar).item()
    return total / test_x.shape[0]


def baseline(
    root: str, test_x: torch.Tensor, target: float, max_epochs: int, device: str = "cpu"
) -> tuple[float, int, float]:
    """(seconds, epochs, -ELBO) when the example loop first reaches ``target``, or its last epoch."""
    torch.manual_seed(0)
    started = time.perf_counter()
    model = ExampleVAE().to(device)
    test_x = test_x.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = example_loader(root)
    for epoch in range(1, max_epochs + 1):
        train_epoch(model, optimizer, loader, device)
        score = example_test_neg_elbo(model, test_x)
        print(f"  example loop epoch {epoch:3d}: test -ELBO {score:7.2f}", flush=True)
        if score <= target:
            break
    return time.perf_counter() - started, epoch, score


class Reached(Exception):
    pass


class StopAt:
    """Stops `vaecli.train` at the first epoch whose test -ELBO is at most ``target``."""

    def __init__(self, target: float) -> None:
        self.target, self.last = target, {}

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def on_step(self, step: int) -> None: ...

    def on_epoch_end(self, metrics: dict) -> None:
        self.last = metrics
        print(
            f"  vae train epoch {metrics['epoch']:3d}: test -ELBO {metrics['test_neg_elbo']:7.2f}", flush=True
        )
        if metrics["test_neg_elbo"] <= self.target:
            raise Reached


def ours(root: str, target: float, precision: str, device: str = "cpu") -> tuple[float, int, float]:
    """(seconds, epochs, -ELBO) when `vae train`'s default recipe (in ``precision``) first reaches
    ``target``."""
    observer = StopAt(target)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config = TrainConfig(data_dir=root, device=device, out=f"{tmp}/run", precision=precision)
            train(config, observer)
        except Reached:
            pass
    return time.perf_counter() - started, observer.last["epoch"], observer.last["test_neg_elbo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--target", type=float, default=100.0)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="vae train's (auto: float32 on CPUs)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps, for both")
    args = parser.parse_args()
    root = resolve_data_dir(args.data_dir)
    images = mnist(root, "test").images
    test_x = prepare_fixed(Bernoulli(), images, TEST_PREPARE_SEED).view(-1, 784)
    print(f"time to test -ELBO <= {args.target} nats, {torch.get_num_threads()} CPU threads, {args.device}")
    ours_s, ours_epochs, ours_score = ours(str(root), args.target, args.precision, args.device)
    base_s, base_epochs, base_score = baseline(str(root), test_x, args.target, args.max_epochs, args.device)
    reached = "" if base_score <= args.target else f" (not reached in {base_epochs} epochs)"
    print(f"example loop: {base_s:7.1f} s, {base_epochs} epochs, -ELBO {base_score:.2f}{reached}")
    precision = f" (--precision {args.precision})"
    print(f"vae train:    {ours_s:7.1f} s, {ours_epochs} epochs, -ELBO {ours_score:.2f}{precision}")
    print(f"ratio:        {ours_s / base_s:7.3f} of the example loop's time ({base_s / ours_s:.1f}x faster)")


if __name__ == "__main__":
    main()
