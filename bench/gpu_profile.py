"""What limits a training step on a GPU: torch.profiler over steady-state steps of the default
recipe (or ``--compile``), the kernels that take the most device time, and the epoch's time.

    VAECLI_DATA_DIR=../shared/data python bench/gpu_profile.py [--device cuda] [--compile] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from vaecli.datasets import resolve_data_dir
from vaecli.train import Callback, TrainConfig, train


class Profile(Callback):
    """Profile steps ``first`` + 1 to ``first + steps`` of the second epoch (the first warms up)."""

    def __init__(self, first: int, steps: int) -> None:
        self.first, self.steps, self.epoch, self.table = first, steps, 0, ""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int) -> None:
        if self.epoch != 2:
            return
        if step == self.first:
            torch.cuda.synchronize()
            self.profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.profiler.__enter__()
        elif step == self.first + self.steps:
            torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            averages = self.profiler.key_averages()
            self.table = averages.table(sort_by="self_device_time_total", row_limit=15)
            device = sum(e.self_device_time_total for e in averages) / self.steps
            host = sum(e.self_cpu_time_total for e in averages) / self.steps
            self.summary = f"per step: {device / 1e3:.3f} ms of kernels, {host / 1e3:.3f} ms of host time"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(torch.cuda.get_device_name(args.device), "--compile" if args.compile else "")
    probe = Profile(first=40, steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(data_dir=str(resolve_data_dir(args.data_dir)), epochs=2, device=args.device,
                             compile=args.compile, out=f"{tmp}/run")  # fmt: skip
        rows = train(config, probe).metrics
    for row in rows:
        print(f"epoch {row['epoch']}: {row['seconds']:.3f} s, {row['images_per_s']:.0f} images/s, "
              f"test -ELBO {row['test_neg_elbo']:.2f}")  # fmt: skip
    print(probe.summary)
    print(probe.table)


if __name__ == "__main__":
    main()
