"""Training throughput: a plain DataLoader + ToTensor loop against `vaecli.train`, in one run.

Both train the same VAE (vaecli's MLP, Bernoulli decoder, dynamic binarisation, Adam) with the
same batch size on the same device; the script prints images/s of each and the ratio.

    VAECLI_DATA_DIR=../shared/data python bench/train_throughput.py [--epochs 2] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST

from vaecli.datasets import resolve_data_dir
from vaecli.model import ModelSpec, build_model
from vaecli.train import TrainConfig, train


def baseline(root: str, hidden: str, latent_dim: int, batch_size: int, epochs: int) -> float:
    """The textbook loop: a DataLoader of ToTensor images, binarised per batch; images/s."""
    torch.manual_seed(0)
    model = build_model(ModelSpec((1, 28, 28), latent_dim, architecture_options={"hidden": hidden}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = MNIST(root, train=True, transform=transforms.ToTensor())
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    rates = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for x, _ in loader:
            x = torch.bernoulli(x)
            loss = -model.elbo(x).elbo.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += x.shape[0]
        rates.append(seen / (time.perf_counter() - start))
    return max(rates)


def ours(root: str, hidden: str, latent_dim: int, batch_size: int, epochs: int) -> float:
    """`vaecli.train` for the same epochs; its best epoch's images/s."""
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            data_dir=root,
            arch_options={"hidden": hidden},
            latent_dim=latent_dim,
            batch_size=batch_size,
            epochs=epochs,
            device="cpu",
            out=f"{tmp}/run",
        )
        return max(m["images_per_s"] for m in train(config).metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--hidden", default="512,256")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    root = str(resolve_data_dir(args.data_dir))
    shape = f"MLP 784-{args.hidden.replace(',', '-')}-{args.latent_dim}, batch {args.batch_size}"
    print(f"training throughput on {torch.get_num_threads()} CPU threads, {shape}")
    base = baseline(root, args.hidden, args.latent_dim, args.batch_size, args.epochs)
    print(f"DataLoader + ToTensor loop: {base:10.0f} images/s")
    fast = ours(root, args.hidden, args.latent_dim, args.batch_size, args.epochs)
    print(f"vaecli train:               {fast:10.0f} images/s")
    print(f"ratio:                      {fast / base:10.2f}x")


if __name__ == "__main__":
    main()
