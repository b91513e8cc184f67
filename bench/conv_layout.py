"""Training images/s of vaecli's convolutional models with channels-last convolutions (what
``vaecli.devices.place`` does on a CPU) against the default layout, in one run.

The layout is the only change: the baseline runs the same code with the device's kind out of
``CHANNELS_LAST_DEVICES``, the other with it in. The contestants take turns, one fresh one-epoch
run each per round, so a slow spell of a shared machine hits both; each reports its best round
and the ratio. ``--device cuda`` measures a GPU (bench/gpu_check.sh), where vaecli keeps the
default layout until this has been measured.

    VAECLI_DATA_DIR=../shared/data python bench/conv_layout.py [--rounds 2] [--device cuda]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from model_throughput import one_epoch

from vaecli import devices
from vaecli.datasets import resolve_data_dir

#: The built-in models with convolutions, each on as many images as take a few seconds an epoch.
MODELS: dict[str, tuple[dict[str, Any], int]] = {
    "hierarchical, conv cells (default)": ({"model": "hierarchical"}, 3072),
    "vae, conv architecture": ({"arch": "conv"}, 15360),
    "vae, conv, categorical 256 (the recipe's)": (
        {"arch": "conv", "likelihood": "categorical", "likelihood_options": {"bins": 256}}, 3072,
    ),
}  # fmt: skip


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    root = str(resolve_data_dir(args.data_dir))
    kind = torch.device(args.device).type
    layouts = {"default layout": frozenset(), "channels-last": frozenset({kind})}
    best: dict[tuple[str, str], float] = {}
    for round_ in range(args.rounds):
        for model, (settings, images) in MODELS.items():
            for layout, chosen in layouts.items():
                devices.CHANNELS_LAST_DEVICES = chosen  # (read by place() at every run's start)
                rate = one_epoch(root, settings, images, args.device)
                best[model, layout] = max(best.get((model, layout), 0.0), rate)
                print(f"round {round_ + 1}: {model:42s} {layout:15s} {rate:8.0f} img/s", flush=True)
    for model in MODELS:
        before, after = best[model, "default layout"], best[model, "channels-last"]
        print(f"{model:42s} default {before:7.0f}  channels-last {after:7.0f} img/s  {after / before:.2f}x")


if __name__ == "__main__":
    main()
