"""Peak memory (resident set size) of a MNIST training run: `vae train` with its default recipe
against PyTorch's VAE example loop (see example_vae.py), each in its own process, in one run.

    VAECLI_DATA_DIR=../shared/data python bench/memory.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vaecli.datasets import resolve_data_dir

HERE = Path(__file__).resolve().parent
EXAMPLE = """
import sys, torch
sys.path.insert(0, {here!r})
from example_vae import ExampleVAE, example_loader, train_epoch
model = ExampleVAE()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loader = example_loader({root!r})
for _ in range({epochs}):
    train_epoch(model, optimizer, loader)
"""


def measured(command: list[str]) -> float:
    """Peak RSS in MB of ``command``, run in a fresh watcher process (RUSAGE_CHILDREN keeps the
    largest child ever waited for, so each measurement needs a watcher of its own)."""
    probe = "import resource, subprocess, sys\n"
    probe += f"subprocess.run({command!r}, check=True, stdout=subprocess.DEVNULL)\n"
    probe += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"  # Linux: kB
    return float(
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    root = str(resolve_data_dir(args.data_dir))
    example = EXAMPLE.format(here=str(HERE), root=root, epochs=args.epochs)
    base = measured([sys.executable, "-c", example])
    with tempfile.TemporaryDirectory() as tmp:
        vae = [sys.executable, "-m", "vaecli", "train", "--data-dir", root, "--epochs", str(args.epochs)]
        ours = measured([*vae, "--device", "cpu", "--quiet", "--out", os.path.join(tmp, "run")])
    print(f"peak RSS over {args.epochs} epochs of MNIST training")
    print(f"example loop: {base:7.0f} MB")
    print(f"vae train:    {ours:7.0f} MB ({ours / base:.2f}x the example loop)")


if __name__ == "__main__":
    main()
