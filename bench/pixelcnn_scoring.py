"""`vae eval` of a model with the `pixelcnn` decoder: its scoring as vaecli does it on a CPU (in
cache-sized pieces, each image's window of earlier pixels read once for all its draws) against two
baselines: one pass over each chunk of samples, and pieces with the window read again for every
draw (each draw scored as a copy of its image, what a likelihood does by default).

All run `vaecli.evaluation.evaluate` on the same prepared MNIST test images with the same k and
seed, in turns, and print images/s, the ratios, and the -log p(x) estimates (equal but for float
rounding: the variants only change the order of the work).

    VAECLI_DATA_DIR=../shared/data python bench/pixelcnn_scoring.py --model RUN [--images 20] [--k 1000]
"""

from __future__ import annotations

import argparse
import time
import types

import torch

from vaecli.datasets import load_dataset
from vaecli.evaluation import TEST_PREPARE_SEED, evaluate, prepare_fixed
from vaecli.likelihoods import PixelCNN, pixelcnn
from vaecli.modelfile import load_model, model_path
from vaecli.models import LatentVariableModel

ONE_PASS = 2**62  # bytes: every chunk in one piece


def scored_as_copies(likelihood: PixelCNN, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of every draw as a copy of its image (a likelihood's default): a window a draw."""
    draws = params.shape[0] // x.shape[0]
    return PixelCNN.log_prob_draws(likelihood, x.repeat_interleave(draws, dim=0), params)


def timed(
    model: LatentVariableModel, x: torch.Tensor, k: int, variant: tuple[int, bool]
) -> tuple[float, float]:
    """(images/s, -log p(x)) of one evaluation with pieces of ``variant[0]`` bytes and, where
    ``variant[1]`` is set, the window read once per draw."""
    piece_bytes, window_per_draw = variant
    pixelcnn.SCORE_CHUNK_BYTES = piece_bytes
    likelihood = model.likelihood
    if window_per_draw:
        likelihood.log_prob_draws = types.MethodType(scored_as_copies, likelihood)
    try:
        started = time.perf_counter()
        report = evaluate(model, x, k=k, seed=0)
    finally:
        likelihood.__dict__.pop("log_prob_draws", None)
    return len(x) / (time.perf_counter() - started), report.neg_log_px


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model file or run folder with a pixelcnn decoder")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--images", type=int, default=20, help="test images scored by each")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--rounds", type=int, default=2, help="turns of the baselines then vaecli")
    args = parser.parse_args()
    model, _ = load_model(model_path(args.model), torch.device("cpu"))
    if model.likelihood.name != "pixelcnn":
        parser.error(f"{args.model} has a {model.likelihood.name} decoder, not pixelcnn")
    shape = tuple(model.spec.input_shape)
    data = load_dataset("mnist", "test", {}, args.data_dir, args.images, shape)
    x = prepare_fixed(model.likelihood, data.images, TEST_PREPARE_SEED)
    pieces = pixelcnn.SCORE_CHUNK_BYTES
    variants = {"one pass": (ONE_PASS, True), "pieces": (pieces, True), "vaecli": (pieces, False)}
    best = dict.fromkeys(variants, (0.0, 0.0))
    for _ in range(args.rounds):
        for name, variant in variants.items():
            best[name] = max(best[name], timed(model, x, args.k, variant))
    labels = {"one pass": "one pass, a window per draw", "pieces": "pieces, a window per draw",
              "vaecli": "pieces, a window per image (vaecli)"}  # fmt: skip
    for name, (rate, nats) in best.items():
        print(f"{labels[name]:>36}: {rate:7.2f} images/s  -log p(x) {nats:.4f}")
    ours = best["vaecli"][0]
    print(
        f"ratio: {ours / best['one pass'][0]:.2f}x over one pass, {ours / best['pieces'][0]:.2f}x over "
        f"a window per draw ({args.images} images, k = {args.k})"
    )


if __name__ == "__main__":
    main()
