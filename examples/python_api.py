"""vaecli from Python: train a VAE on MNIST, score it, and save a grid of samples.

    VAECLI_DATA_DIR=../shared/data python examples/python_api.py --epochs 5 --out runs/example

Every CLI command is a thin layer over functions like these.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaecli.config import TrainConfig
from vaecli.fileio import write_bytes_atomic
from vaecli.sampling import encode_samples, sample
from vaecli.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-train", type=int, default=None, help="use only the first N images")
    parser.add_argument("--out", default="runs/example")
    args = parser.parse_args()

    config = TrainConfig(
        data="mnist",
        likelihood="bernoulli",
        epochs=args.epochs,
        limit_train=args.limit_train,
        out=args.out,
        force=True,
    )
    run = train(config)
    last = run.metrics[-1]
    print(f"test -ELBO {last['test_neg_elbo']:.2f} nats (reconstruction {last['test_reconstruction']:.2f},")
    print(f"KL {last['test_kl']:.2f}) after {args.epochs} epochs; model in {run.model_path}")

    samples = sample(run.run_dir, n=64, seed=0)  # z (64, latent) and images (64, 1, 28, 28) in [0, 1]
    grid = Path(args.out) / "example-samples.png"
    write_bytes_atomic(grid, encode_samples(samples, "png"))
    print(f"64 samples in {grid}")


if __name__ == "__main__":
    main()
