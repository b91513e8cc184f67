"""The dataset cache: time from `vae train --data folder:DIR` starting to its first training
step, the first time (every file decoded, the cache written) and the second (the cache
memory-mapped), on 20,000 PNG files written from MNIST's training digits: as they are (28x28
grey), or with ``--size S`` as S x S colour pictures (each digit scaled up, its three channels
the digit, its negative and half of it), which the folder reader scales to 64x64 as it does
photos.

    VAECLI_DATA_DIR=../shared/data python bench/data_cache.py [--files 20000] [--rounds 2] [--size 256]

Each start is a fresh `vae train` process (the same command each time), stopped at its first
step; the first round starts with an empty cache folder, and later rounds find it filled. Then
the data part alone, in this process: what a start spends on the folder (its suggestion, then
both splits) without the cache and with it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from vaecli.datasets import mnist, resolve_data_dir

CHILD = """
import sys
from vaecli.cli import main
from vaecli.train import Callback

class FirstStep(Callback):
    def on_step(self, step):
        print("first step", flush=True)
        raise SystemExit(0)

import vaecli.train as t
real = t.train
t.train = lambda config, callbacks=None, resume=False: real(config, FirstStep(), resume)
sys.exit(main(sys.argv[1:]))
"""


def write_pngs(folder: Path, n: int, root: Path, size: int) -> None:
    digits = mnist(root, "train").images[:, 0]
    for i in range(n):
        sub = folder / f"{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(digits[i % len(digits)].numpy())
        if size != 28:
            grey = picture.resize((size, size), Image.Resampling.BILINEAR)
            negative = Image.eval(grey, lambda v: 255 - v)
            picture = Image.merge("RGB", (grey, negative, Image.eval(grey, lambda v: v // 2)))
        picture.save(sub / f"{i:05d}.png")


def time_to_first_step(folder: Path, out: Path, env: dict[str, str]) -> float:
    args = ["train", "--data", f"folder:{folder}", "--epochs", "1", "--device", "cpu", "--quiet",
            "--out", str(out), "--force"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if "first step" not in done.stdout:
        raise SystemExit(f"vae train failed: {done.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2, help="starts after the first (cache filled)")
    parser.add_argument("--size", type=int, default=28, help="the PNGs' side (28: the digits as they are)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "pngs", Path(tmp) / "cache"
        write_pngs(folder, args.files, resolve_data_dir(args.data_dir), args.size)
        env = {**os.environ, "VAECLI_DATA_CACHE": str(cache), "VAECLI_PROGRESS_SECONDS": "3600"}
        cold = time_to_first_step(folder, Path(tmp) / "run", env)
        print(f"first start (decodes {args.files} files, writes the cache): {cold:6.2f} s to the first step")
        warm = [time_to_first_step(folder, Path(tmp) / "run", env) for _ in range(args.rounds)]
        size = sum(f.stat().st_size for f in cache.iterdir()) / 2**20
        print(f"later starts (the cache, {size:.1f} MB, memory-mapped): "
              + ", ".join(f"{w:.2f}" for w in warm) + " s")  # fmt: skip
        print(f"ratio: {cold / min(warm):.1f}x faster to the first step")
        os.environ["VAECLI_DATA_CACHE"] = str(Path(tmp) / "in-process-cache")  # (empty: decoded first)
        parts = [data_part(folder) for _ in range(3)]
        print(f"the data part alone: {parts[0]:.2f} s decoding, {min(parts[1:]):.3f} s from the cache: "
              f"{parts[0] / min(parts[1:]):.0f}x")  # fmt: skip


def data_part(folder: Path) -> float:
    """Seconds for the folder's suggestion and both splits (the first call fills the cache)."""
    from vaecli.config import TrainConfig
    from vaecli.training.run import complete_config, load_split

    start = time.perf_counter()
    config = complete_config(TrainConfig(data=f"folder:{folder}"), tell=False)
    load_split(config, "train"), load_split(config, "test")
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
