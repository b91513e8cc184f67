"""Likelihoods side by side: the same training budget for each, test numbers in nats and bits/dim.

Each entry is ``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE]`` (the options of ``--likelihood NAME``).
Every run uses vaecli's defaults otherwise (MLP, latent 32, Adam 1e-3 cosine, seed 0) and the
same epochs and images; the script prints one row per likelihood and whether every epoch's
numbers stayed finite (no NaN or inf).

    VAECLI_DATA_DIR=../shared/data python bench/likelihoods.py --epochs 5
    VAECLI_DATA_DIR=../shared/data python bench/likelihoods.py --epochs 20 gaussian:sigma=pixel categorical
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from vaecli.options import parse_key_values
from vaecli.train import TrainConfig, train

DEFAULT_ENTRIES = ("bernoulli", "gaussian:sigma=learned", "gaussian:sigma=pixel", "categorical")


def run(entry: str, args: argparse.Namespace) -> dict[str, object]:
    """Train one likelihood for the budget; its last epoch's test numbers and a finiteness check."""
    name, _, options = entry.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            data_dir=args.data_dir,
            likelihood=name,
            likelihood_options=parse_key_values(options.split(",") if options else [], "likelihood"),
            epochs=args.epochs,
            limit_train=args.limit_train,
            device="cpu",
            out=f"{tmp}/run",
        )
        started = time.perf_counter()
        metrics = train(config).metrics
        seconds = time.perf_counter() - started
    numbers = [v for m in metrics for v in m.values() if isinstance(v, int | float) or v is None]
    finite = all(v is not None and math.isfinite(v) for v in numbers)  # (strict JSON: null for a NaN)
    last = metrics[-1]
    return {
        "entry": entry,
        "neg_elbo": last["test_neg_elbo"],
        "recon": last["test_reconstruction"],
        "kl": last["test_kl"],
        "bpd": last["test_neg_elbo"] / (784 * math.log(2.0)),
        "eight_bit": "test_bits_per_dim" in last,
        "images_per_s": sum(m["images_per_s"] for m in metrics) / len(metrics),
        "minutes": seconds / 60,
        "finite": finite,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="*", default=list(DEFAULT_ENTRIES))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-train", type=int, default=None)
    args = parser.parse_args()
    images = args.limit_train or 60000
    threads = torch.get_num_threads()
    print(f"MNIST, {images} training images, {args.epochs} epochs each, {threads} CPU threads")
    print("test numbers of the last epoch, nats per image; bits/dim = nats / (784 ln 2)")
    print(
        f"{'likelihood':<24}{'-ELBO':>9}{'recon':>9}{'KL':>7}{'bits/dim':>10}{'img/s':>8}{'min':>6}  finite"
    )
    for entry in args.entries:
        r = run(entry, args)
        bpd = f"{r['bpd']:.3f}" + ("" if r["eight_bit"] else "*")
        print(
            f"{r['entry']:<24}{r['neg_elbo']:>9.2f}{r['recon']:>9.2f}{r['kl']:>7.2f}{bpd:>10}"
            f"{r['images_per_s']:>8.0f}{r['minutes']:>6.1f}  {'yes' if r['finite'] else 'NO'}",
            flush=True,
        )
    print("* binarised data: bits/dim of a different (binary) dataset, not comparable with 8-bit rows")


if __name__ == "__main__":
    main()
