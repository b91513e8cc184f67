"""`vae eval` of a model with the `pixelcnn` decoder: its scoring in one pass over each chunk of
samples (the baseline) against the same in cache-sized pieces (what vaecli does on a CPU).

Both run `vaecli.evaluation.evaluate` on the same prepared MNIST test images with the same k and
seed, in turns, and print images/s, the ratio, and both -log p(x) estimates (equal but for float
rounding: the pieces only change the order of the work).

    VAECLI_DATA_DIR=../shared/data python bench/pixelcnn_scoring.py --model RUN [--images 20] [--k 1000]
"""

from __future__ import annotations

import argparse
import time

import torch

from vaecli.datasets import load_dataset
from vaecli.evaluation import TEST_PREPARE_SEED, evaluate, prepare_fixed
from vaecli.likelihoods import pixelcnn
from vaecli.modelfile import load_model, model_path
from vaecli.models import LatentVariableModel

ONE_PASS = 2**62  # bytes: every chunk in one piece


def timed(model: LatentVariableModel, x: torch.Tensor, k: int, piece_bytes: int) -> tuple[float, float]:
    """(images/s, -log p(x)) of one evaluation with pieces of ``piece_bytes``."""
    pixelcnn.SCORE_CHUNK_BYTES = piece_bytes
    started = time.perf_counter()
    report = evaluate(model, x, k=k, seed=0)
    return len(x) / (time.perf_counter() - started), report.neg_log_px


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model file or run folder with a pixelcnn decoder")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--images", type=int, default=20, help="test images scored by both")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--rounds", type=int, default=2, help="turns of baseline then vaecli")
    args = parser.parse_args()
    model, _ = load_model(model_path(args.model), torch.device("cpu"))
    if model.likelihood.name != "pixelcnn":
        parser.error(f"{args.model} has a {model.likelihood.name} decoder, not pixelcnn")
    shape = tuple(model.spec.input_shape)
    data = load_dataset("mnist", "test", {}, args.data_dir, args.images, shape)
    x = prepare_fixed(model.likelihood, data.images, TEST_PREPARE_SEED)
    pieces = pixelcnn.SCORE_CHUNK_BYTES
    best = {"one pass": (0.0, 0.0), "pieces": (0.0, 0.0)}
    for _ in range(args.rounds):
        for name, size in (("one pass", ONE_PASS), ("pieces", pieces)):
            rate, nats = timed(model, x, args.k, size)
            best[name] = max(best[name], (rate, nats))
    for name, (rate, nats) in best.items():
        print(f"{name:>9}: {rate:7.2f} images/s  -log p(x) {nats:.4f}")
    print(f"ratio: {best['pieces'][0] / best['one pass'][0]:.2f}x ({args.images} images, k = {args.k})")


if __name__ == "__main__":
    main()
