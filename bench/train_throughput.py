"""Training throughput: the canonical PyTorch VAE loop against `vaecli.train`, in one run, and
both against this machine's matrix-multiply limit.

Baseline: the model and settings of PyTorch's own VAE example (pytorch/examples, vae/main.py):
an MLP 784-400-20, sigmoid outputs with `binary_cross_entropy(reduction="sum")`, Adam 1e-3,
`DataLoader(MNIST(transform=ToTensor()), batch_size=128, shuffle=True)`; each batch is binarised
(the same dynamic binarisation vaecli uses). vaecli: `vae train --hidden 400 --latent-dim 20
--batch-size 128 --arch-opt activation=relu` (and, with --default, vaecli's default recipe).
The matrix-multiply limit: the FLOPs of one training step's matrix products (forward, weight
and input gradients) timed with torch.matmul on exactly those shapes; the % is images/s over
that limit. The contestants take turns, one epoch each per round (vaecli as a fresh one-epoch
run), so a slow spell of a shared machine hits all of them; each reports its best epoch, and
the % uses the fastest matmul limit measured in any round.

    VAECLI_DATA_DIR=../shared/data python bench/train_throughput.py [--epochs 4] [--default] [--compile]
        [--bf16] [--device cuda]

``--compile`` adds vaecli with ``--compile`` (vae train compiles before the first epoch, so
the epoch is timed compiled); the run's seconds outside its epoch, the compilation's, are printed.
``--bf16`` adds vaecli with ``--precision bf16`` (on CPUs with bfloat16 instructions its matrix
products run at twice the float32 rate); its % is of the bfloat16 matmul limit.
``--device`` runs both on that device (the example moves each batch there, as it does on a GPU);
the matmul limit is then that device's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
from example_vae import ExampleVAE, example_loader, train_epoch
from torch import nn

from vaecli.datasets import resolve_data_dir
from vaecli.models import ModelSpec, build_model
from vaecli.train import TrainConfig, train


class Baseline:
    """The example's loop, one epoch at a time."""

    def __init__(self, root: str, batch_size: int, device: str = "cpu") -> None:
        torch.manual_seed(0)
        self.device = device
        self.model = ExampleVAE().to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loader = example_loader(root, batch_size)

    def epoch(self) -> float:
        """Train one epoch; its images/s."""
        start = time.perf_counter()
        seen = train_epoch(self.model, self.optimizer, self.loader, self.device)
        _synchronise(self.device)
        return seen / (time.perf_counter() - start)


def _synchronise(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def ours(root: str, config: dict, device: str = "cpu") -> float:
    """One epoch of `vaecli.train` (a fresh run); its images/s. A ``compile`` run compiles before
    its epoch starts; the seconds it spent outside the epoch (compiling, evaluating) are printed."""
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainConfig(data_dir=root, epochs=1, device=device, out=f"{tmp}/run", **config)
        metrics = train(run).metrics[-1]
    if config.get("compile"):
        outside = metrics["elapsed"] - metrics["seconds"]
        print(f"  (--compile: {outside:.1f} s outside the epoch, compiling and evaluating)", flush=True)
    return metrics["images_per_s"]


@dataclass
class MatmulLimit:
    """One training step's matrix products and the fastest this machine multiplies them."""

    flops: float  # per step
    seconds: float  # per step, at the measured matmul speed
    batch: int

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds


def matmul_limit(config: dict, batch_size: int, repeats: int = 200, device: str = "cpu") -> MatmulLimit:
    """Time torch.matmul on every product of one step of ``config``'s model: for each linear
    layer (in -> out) the forward (B,in)@(in,out), the weight gradient (out,B)@(B,in) and, except
    for the first layer (images need no gradient), the input gradient (B,out)@(out,in). In
    bfloat16 for a ``precision`` bf16 config, else float32."""
    dtype = torch.bfloat16 if config.get("precision") == "bf16" else torch.float32
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
        a, w = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
        for _ in range(20):
            torch.matmul(a, w)
        _synchronise(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, w)
        _synchronise(device)
        seconds += (time.perf_counter() - start) / repeats
    return MatmulLimit(flops, seconds, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=4, help="rounds: one epoch of each, in turn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also time vaecli with --compile")
    parser.add_argument("--default", action="store_true", help="also time vaecli's default recipe")
    parser.add_argument("--bf16", action="store_true", help="also time vaecli with --precision bf16")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps, for both")
    args = parser.parse_args()
    root = str(resolve_data_dir(args.data_dir))
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {where}, {args.epochs} rounds, "
          "best epoch")  # fmt: skip
    example = {
        "arch_options": {"hidden": "400", "activation": "relu"},  # the example's model exactly
        "latent_dim": 20,
        "batch_size": args.batch_size,
    }
    recipes = {"vae train, the example's model and batch": ("", example)}
    if args.default:
        recipes["vae train (default recipe)"] = ("(default recipe) ", {})
    variants = {"--compile": {"compile": True}} if args.compile else {}
    if args.bf16:
        variants["--precision bf16"] = {"precision": "bf16"}
    contestants = {}
    for name, (short, config) in recipes.items():
        contestants[name] = config
        for flag, change in variants.items():
            contestants[f"  ... {short}{flag}"] = {**config, **change}
    limits = {name: [] for name in contestants}
    rates: dict[str, list[float]] = {name: [] for name in ["baseline", *contestants]}
    base = Baseline(root, args.batch_size, args.device)
    # Rounds of one epoch each, in turn: a shared machine's slow spells hit every contestant.
    for round_ in range(1, args.epochs + 1):
        rates["baseline"].append(base.epoch())
        for name, config in contestants.items():
            rates[name].append(ours(root, config, args.device))
            batch = config.get("batch_size", TrainConfig.batch_size)
            limits[name].append(matmul_limit(config, batch, device=args.device))
        row = ", ".join(f"{r[-1]:.0f}" for r in rates.values())
        print(f"  round {round_}: images/s {row}", flush=True)
    print_results(rates, limits)


def print_results(rates: dict[str, list[float]], limits: dict[str, list[MatmulLimit]]) -> None:
    """Each contestant's best epoch against the baseline's, the spread over rounds, and the matmul limits."""
    contestants = [name for name in rates if name != "baseline"]
    best = max(rates["baseline"])
    print(f"{'':48} {'images/s':>10} {'x baseline':>11} {'% of matmul':>12}")
    print(f"{'DataLoader + ToTensor loop (pytorch/examples)':48} {best:10.0f} {1:10.2f}x")
    for name in contestants:
        rate = max(rates[name])
        limit = max(limits[name], key=lambda lim: lim.images_per_s)  # the fastest matmuls seen
        print(f"{name:48} {rate:10.0f} {rate / best:10.2f}x {100 * rate / limit.images_per_s:11.0f}%")
    for name in contestants:  # rounds share the machine's moods: their ratios show the spread
        ratios = sorted(r / b for r, b in zip(rates[name], rates["baseline"], strict=True))
        spread = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"{name.strip()}: x baseline round by round {spread} (median {statistics.median(ratios):.2f})")
        shares = sorted(100 * r / lim.images_per_s for r, lim in zip(rates[name], limits[name], strict=True))
        spread = ", ".join(f"{p:.0f}%" for p in shares)
        median = statistics.median(shares)
        print(f"{name.strip()}: % of that round's matmul limit {spread} (median {median:.0f}%)")
    for name in contestants:
        limit = max(limits[name], key=lambda lim: lim.images_per_s)
        print(
            f"matmul limit, {name.strip()}: {limit.flops / 1e6:.0f} MFLOP/step at batch {limit.batch}, "
            f"{limit.flops / limit.seconds / 1e9:.0f} GFLOP/s -> {limit.images_per_s:.0f} images/s"
        )


if __name__ == "__main__":
    main()
