"""Importance-sampled evaluation: a naive per-image, per-sample loop against `vaecli.evaluation.evaluate`.

Both estimate log p(x) ~ logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k on the
same prepared MNIST test images with the same model and k. The naive loop encodes one image and
then draws, decodes and scores one sample at a time (what a first implementation does); vaecli
draws the samples on the device in large chunks and scores each chunk in one vectorised pass.
The script prints images/s of each, their ratio, and both estimates (equal up to Monte Carlo
noise).

    VAECLI_DATA_DIR=../shared/data python bench/eval_speed.py [--images 50] [--k 1000] [--model RUN]

Without --model it first trains vaecli's default model (MLP 784-512-256-32, Bernoulli) for
--epochs epochs on MNIST; the speed does not depend on how well it is trained.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from vaecli.datasets import load_dataset
from vaecli.evaluation import TEST_PREPARE_SEED, evaluate, prepare_fixed
from vaecli.modelfile import load_model
from vaecli.models import VAE
from vaecli.train import TrainConfig, train


@torch.no_grad()
def naive(model: VAE, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """log p(x) per image, one image and one sample at a time through the model."""
    generator = torch.Generator().manual_seed(seed)
    d = model.latent_dim
    estimates = []
    for image in x.split(1):
        mu, logvar = model.encode(image)
        log_w = []
        for _ in range(k):
            eps = torch.randn(1, d, generator=generator)
            z = mu + eps * torch.exp(0.5 * logvar)
            log_px_z = model.likelihood.log_prob(image, model.decode(z))
            log_pz = -0.5 * (z.square().sum(-1) + d * math.log(2 * math.pi))
            log_qz = -0.5 * (eps.square().sum(-1) + logvar.sum(-1) + d * math.log(2 * math.pi))
            log_w.append(log_px_z + log_pz - log_qz)
        estimates.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(k))
    return torch.stack(estimates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model file or run folder (default: train one)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--images", type=int, default=50, help="test images scored by both")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs when no --model is given")
    parser.add_argument("--train-images", type=int, default=None, help="train on only the first N images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            config = TrainConfig(
                data_dir=args.data_dir,
                epochs=args.epochs,
                limit_train=args.train_images,
                limit_test=1000,
                device="cpu",
                out=f"{tmp}/run",
            )
            args.model = str(train(config).run_dir)
        model, header = load_model(args.model, "cpu")
    images = load_dataset(
        header["data"]["name"], "test", header["data"]["options"], args.data_dir, args.images
    )
    x = prepare_fixed(model.likelihood, images.images, TEST_PREPARE_SEED)
    n = x.shape[0]
    spec = model.spec
    options = " ".join(f"{key}={value}" for key, value in spec.architecture_options.items()) or "defaults"
    what = f"{spec.architecture} ({options}), latent {spec.latent_dim}, {spec.likelihood}"
    print(
        f"importance-sampled log p(x), k = {args.k}, {n} images, "
        f"{torch.get_num_threads()} CPU threads, {what}"
    )

    start = time.perf_counter()
    slow = naive(model, x, args.k, args.seed)
    naive_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    fast = evaluate(model, x, k=args.k, seed=args.seed)
    fast_rate = n / (time.perf_counter() - start)

    print(f"naive loop (one image, one sample at a time): {naive_rate:10.2f} images/s   "
          f"-log p(x) = {-slow.mean().item():.2f} nats")  # fmt: skip
    print(f"vaecli evaluate (chunked, vectorised):       {fast_rate:10.2f} images/s   "
          f"-log p(x) = {fast.neg_log_px:.2f} nats")  # fmt: skip
    print(f"ratio:                                       {fast_rate / naive_rate:10.1f}x")


if __name__ == "__main__":
    main()
