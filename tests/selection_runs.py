"""The short, noisy MNIST training that `--keep best` and `--patience` tests (and `vae runs`'s)
share: its validation bound falls with ups and downs, so its best epoch is not its last."""

from __future__ import annotations

from pathlib import Path

from vaecli.config import TrainConfig

PATIENCE = 3
# 300 training images in batches of 10 at a constant lr: the 200 validation images' -ELBO falls
# with ups and downs (the model starts to fit its few images), so the best epoch is not the last
# and three epochs without a new best come within the first 30 (at epoch 12 for seed 0).
NOISY = {"data_options": {"val": "200"}, "limit_train": 300, "limit_test": 200, "batch_size": 10,
         "epochs": 30, "lr": 3e-3, "lr_schedule": "constant", "device": "cpu"}  # fmt: skip


def noisy_config(mnist_root: Path, out: Path, **overrides) -> TrainConfig:
    settings = {**NOISY, "keep": "best", "patience": PATIENCE, **overrides}
    return TrainConfig(data_dir=str(mnist_root), out=str(out), **settings)
