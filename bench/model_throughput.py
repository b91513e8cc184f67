"""Training images/s of the default recipe with each built-in prior and model, in one run.

The prior or the model is the only change: the default (``vae`` with ``normal``, N(0, I), the
closed-form KL) is the baseline; ``vamp`` (K pseudo-inputs encoded at every step, the
Monte-Carlo KL against K components), ``mog``, and the ``hierarchical`` model (its recipe's dense
cells, eager and ``--compile``d, and its default conv cells). The contestants take turns, one fresh
one-epoch run each per round, so a slow spell of a shared machine hits all of them; each reports
its best epoch and its ratio to the default.

    VAECLI_DATA_DIR=../shared/data python bench/model_throughput.py [--rounds 2] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from vaecli.datasets import resolve_data_dir
from vaecli.train import TrainConfig, train

#: The hierarchy of examples/configs/mnist-hierarchical.yaml.
RECIPE = {"cells": "dense", "groups": "1,1,1,1", "width": "256", "latent": "32"}

CONTESTANTS: dict[str, dict[str, Any]] = {
    "normal": {},
    "vamp (K = 500)": {"prior": "vamp", "prior_options": {"k": "500"}},
    "mog (K = 10)": {"prior": "mog", "prior_options": {"k": "10"}},
    "hierarchical dense": {"model": "hierarchical", "model_options": RECIPE},
    "hierarchical dense --compile": {"model": "hierarchical", "model_options": RECIPE, "compile": True},
    "hierarchical conv (default)": {"model": "hierarchical", "limit_train": 6000},
}


def one_epoch(root: str, settings: dict[str, Any], limit: int | None, device: str = "cpu") -> float:
    """images/s of one epoch of the default recipe with ``settings``."""
    with tempfile.TemporaryDirectory() as out:
        settings = {"limit_train": limit, **settings}
        config = TrainConfig(data_dir=root, epochs=1, device=device, out=out, limit_test=1000, **settings)
        return train(config).metrics[-1]["images_per_s"]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="contestants (the first word of each name)")
    parser.add_argument("--limit-train", type=int, default=None, help="training images per epoch")
    args = parser.parse_args()
    root = str(resolve_data_dir(args.data_dir))
    chosen = {
        name: settings for name, settings in CONTESTANTS.items()
        if name == "normal" or args.only is None or name.split()[0] in args.only
    }  # fmt: skip
    best = dict.fromkeys(chosen, 0.0)
    for round_ in range(args.rounds):
        for name, settings in chosen.items():
            rate = one_epoch(root, settings, args.limit_train)
            best[name] = max(best[name], rate)
            print(f"round {round_ + 1}: {name:30s} {rate:8.0f} img/s", flush=True)
    for name in chosen:
        print(f"{name:30s} best {best[name]:8.0f} img/s  {best[name] / best['normal']:.2f}x normal's")


if __name__ == "__main__":
    main()
