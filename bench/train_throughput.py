"""Training throughput: the canonical PyTorch VAE loop against `vaecli.train`, in one run, and
both against this machine's matrix-multiply limit.

Baseline: the model and settings of PyTorch's own VAE example (pytorch/examples, vae/main.py):
an MLP 784-400-20, sigmoid outputs with `binary_cross_entropy(reduction="sum")`, Adam 1e-3,
`DataLoader(MNIST(transform=ToTensor()), batch_size=128, shuffle=True)`; each batch is binarised
(the same dynamic binarisation vaecli uses). vaecli: `vae train --hidden 400 --latent-dim 20
--batch-size 128 --arch-opt activation=relu` (and, with --default, vaecli's default recipe).
The matrix-multiply limit: the FLOPs of one training step's matrix products (forward, weight
and input gradients) timed with torch.matmul on exactly those shapes; the % is images/s over
that limit.

    VAECLI_DATA_DIR=../shared/data python bench/train_throughput.py [--epochs 3] [--compile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import torch
from example_vae import ExampleVAE, example_loader, train_epoch
from torch import nn

from vaecli.datasets import resolve_data_dir
from vaecli.model import ModelSpec, build_model
from vaecli.train import TrainConfig, train


def baseline(root: str, epochs: int, batch_size: int) -> float:
    """The example's loop; images/s of its best epoch."""
    torch.manual_seed(0)
    model = ExampleVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = example_loader(root, batch_size)
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        seen = train_epoch(model, optimizer, loader)
        rates.append(seen / (time.perf_counter() - start))
    return max(rates)


def ours(root: str, config: dict, epochs: int) -> float:
    """`vaecli.train` for the same epochs; its best epoch's images/s."""
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainConfig(data_dir=root, epochs=epochs, device="cpu", out=f"{tmp}/run", **config)
        return max(m["images_per_s"] for m in train(run).metrics)


@dataclass
class MatmulLimit:
    """One training step's matrix products and the fastest this machine multiplies them."""

    flops: float  # per step
    seconds: float  # per step, at the measured matmul speed
    batch: int

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds


def matmul_limit(config: dict, batch_size: int, repeats: int = 200) -> MatmulLimit:
    """Time torch.matmul on every product of one step of ``config``'s model: for each linear
    layer (in -> out) the forward (B,in)@(in,out), the weight gradient (out,B)@(B,in) and, except
    for the first layer (images need no gradient), the input gradient (B,out)@(out,in)."""
    latent_dim = config.get("latent_dim", TrainConfig.latent_dim)
    spec = ModelSpec((1, 28, 28), latent_dim, architecture_options=config.get("arch_options", {}))
    linears = [m for m in build_model(spec).modules() if isinstance(m, nn.Linear)]
    shapes = []
    for i, layer in enumerate(linears):
        n_in, n_out, b = layer.in_features, layer.out_features, batch_size
        shapes += [(b, n_in, n_out), (n_out, b, n_in)] + ([(b, n_out, n_in)] if i else [])
    flops = sum(2.0 * m * k * n for m, k, n in shapes)
    seconds = 0.0
    for m, k, n in shapes:
        a, w = torch.randn(m, k), torch.randn(k, n)
        for _ in range(20):
            torch.matmul(a, w)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, w)
        seconds += (time.perf_counter() - start) / repeats
    return MatmulLimit(flops, seconds, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also time vaecli with --compile")
    parser.add_argument("--default", action="store_true", help="also time vaecli's default recipe")
    args = parser.parse_args()
    root = str(resolve_data_dir(args.data_dir))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.epochs} epochs, best epoch"
    )
    example = {
        "arch_options": {"hidden": "400", "activation": "relu"},  # the example's model exactly
        "latent_dim": 20,
        "batch_size": args.batch_size,
    }
    limit = matmul_limit(example, args.batch_size)
    print(
        f"matmul limit, 784-400-20 batch {args.batch_size}: {limit.flops / 1e6:.0f} MFLOP/step, "
        f"{limit.flops / limit.seconds / 1e9:.0f} GFLOP/s -> {limit.images_per_s:.0f} images/s"
    )
    base = baseline(root, args.epochs, args.batch_size)
    rows = [("DataLoader + ToTensor loop (pytorch/examples)", base, limit)]
    rows.append(("vae train, the example's model and batch", ours(root, example, args.epochs), limit))
    if args.compile:
        rows.append(("  ... --compile", ours(root, {**example, "compile": True}, args.epochs), limit))
    if args.default:
        default_limit = matmul_limit({}, TrainConfig.batch_size)
        rows.append(("vae train (default recipe)", ours(root, {}, args.epochs), default_limit))
    print(f"{'':48} {'images/s':>10} {'x baseline':>11} {'% of matmul':>12}")
    for name, rate, lim in rows:
        print(f"{name:48} {rate:10.0f} {rate / base:10.2f}x {100 * rate / lim.images_per_s:11.0f}%")


if __name__ == "__main__":
    main()
