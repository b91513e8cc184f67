"""Training images/s of the default recipe with each built-in prior, in one run.

The prior is the only change: ``normal`` (N(0, I), closed-form KL) is the baseline; ``vamp``
(K pseudo-inputs encoded at every step, the Monte-Carlo KL against K components) and ``mog``.
The contestants take turns, one fresh one-epoch run each per round, so a slow spell of a shared
machine hits all of them; each reports its best epoch and its ratio to ``normal``.

    VAECLI_DATA_DIR=../shared/data python bench/prior_throughput.py [--rounds 2] [--vamp-k 500]
"""

from __future__ import annotations

import argparse
import tempfile

from vaecli.datasets import resolve_data_dir
from vaecli.train import TrainConfig, train


def one_epoch(root: str, prior: str, options: dict[str, str], limit: int | None) -> float:
    """images/s of one epoch of the default recipe with ``prior``."""
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            data_dir=root, epochs=1, device="cpu", out=out, prior=prior, prior_options=options,
            limit_train=limit, limit_test=1000,
        )  # fmt: skip
        return train(config).metrics[-1]["images_per_s"]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vamp-k", default="500")
    parser.add_argument("--mog-k", default="10")
    parser.add_argument("--limit-train", type=int, default=None, help="training images per epoch")
    args = parser.parse_args()
    root = str(resolve_data_dir(args.data_dir))
    contestants = {"normal": {}, "vamp": {"k": args.vamp_k}, "mog": {"k": args.mog_k}}
    best = dict.fromkeys(contestants, 0.0)
    for round_ in range(args.rounds):
        for prior, options in contestants.items():
            rate = one_epoch(root, prior, options, args.limit_train)
            best[prior] = max(best[prior], rate)
            print(f"round {round_ + 1}: {prior:6s} {rate:8.0f} img/s", flush=True)
    for prior, options in contestants.items():
        label = prior + (f" (K = {options['k']})" if options else "")
        print(f"{label:16s} best {best[prior]:8.0f} img/s  {best[prior] / best['normal']:.2f}x normal's")


if __name__ == "__main__":
    main()
