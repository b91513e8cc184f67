"""Encoding image files: `vae encode` against a naive loop, end to end, in one run; and its memory.

Writes N MNIST test images as PNG files to a temporary folder, trains a small model (vaecli's
default MLP, 1 epoch on 5,000 images: speed does not depend on how well it is trained), then
times two commands that each write the same JSON Lines file:

- naive: a Python script that opens each file with PIL, converts it, and puts it through the
  model one image at a time (`model.encode`), writing `json.dumps` lines;
- vae encode: the real command, `vae encode MODEL FOLDER -o codes.jsonl`.

Both times are wall-clock from process start to exit (imports and model loading included).
Then `vae encode` runs again on FACTOR x N images (the folder hard-linked FACTOR times) and the
peak resident memory (ru_maxrss) of both runs is printed: streaming keeps it flat.

    VAECLI_DATA_DIR=../shared/data python bench/encode_speed.py [--n 10000] [--factor 5] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAIVE = r"""
import json, os, sys
import numpy as np, torch
from PIL import Image
from vaecli.modelfile import load_model

model, _ = load_model(sys.argv[1])
folder, out = sys.argv[2], sys.argv[3]
with torch.no_grad(), open(out, "w") as f:
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        image = Image.open(path).convert("L")
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).view(1, 1, 28, 28)
        mu, logvar = model.encode(x)
        f.write(json.dumps({"path": path, "mu": mu[0].tolist(), "logvar": logvar[0].tolist()}) + "\n")
"""

# Runs a command and prints its wall time and the peak RSS of the largest process it started.
MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "seconds": seconds, "peak_mb": peak_kb / 1024}))
"""


def measure(argv: list[str]) -> dict:
    """Wall time and peak RSS of ``argv``, measured in a fresh process so runs do not mix."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True
    )
    figures = json.loads(result.stdout)
    if figures["code"] != 0:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed with exit code {figures['code']}")
    return figures


def write_pngs(root: str, folder: Path, n: int) -> None:
    from PIL import Image
    from torchvision.datasets import MNIST

    images = MNIST(root, train=False).data.numpy()
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(images[i % len(images)], "L").save(folder / f"{i:06d}.png")


def train_model(root: str, out: Path) -> Path:
    from vaecli.train import TrainConfig, train

    config = TrainConfig(
        data_dir=root, epochs=1, limit_train=5000, limit_test=500, device="cpu", out=str(out)
    )
    return train(config).run_dir


def linked_copies(folder: Path, target: Path, factor: int) -> None:
    """``factor`` subfolders of ``target`` holding hard links (or copies) of ``folder``'s files."""
    for k in range(factor):
        part = target / f"part{k}"
        part.mkdir(parents=True)
        for file in folder.iterdir():
            try:
                os.link(file, part / file.name)
            except OSError:
                shutil.copy(file, part / file.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="images (default 10000)")
    parser.add_argument("--factor", type=int, default=5, help="memory run on FACTOR x N images (default 5)")
    parser.add_argument("--workers", type=int, default=None, help="vae encode --workers (default: its own)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    from vaecli.datasets import resolve_data_dir

    root = str(resolve_data_dir(args.data_dir))
    vae = str(Path(sys.executable).parent / "vae")
    workers = ["--workers", str(args.workers)] if args.workers is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        model = train_model(root, base / "run")
        write_pngs(root, base / "imgs", args.n)
        print(f"{args.n} MNIST PNG files, model: MLP 784-512-256-32, bernoulli; {os.cpu_count()} CPU cores")

        (base / "single").mkdir()
        shutil.copy(base / "imgs" / "000000.png", base / "single")
        one = measure([vae, "encode", str(model), str(base / "single"), "-o", str(base / "one.jsonl")])
        naive_one = measure(
            [sys.executable, "-c", NAIVE, str(model), str(base / "single"), str(base / "n1.jsonl")]
        )
        naive = measure(
            [sys.executable, "-c", NAIVE, str(model), str(base / "imgs"), str(base / "naive.jsonl")]
        )
        ours = measure(
            [vae, "encode", str(model), str(base / "imgs"), "-o", str(base / "codes.jsonl"), *workers]
        )
        check_same(base / "naive.jsonl", base / "codes.jsonl", args.n)
        naive_rate, ours_rate = args.n / naive["seconds"], args.n / ours["seconds"]
        print("end to end (start-up, imports and model loading included):")
        print(f"  naive loop (PIL, 1 at a time): {naive_rate:8.0f} images/s  ({naive['seconds']:.2f} s)")
        print(f"  vae encode:                    {ours_rate:8.0f} images/s  ({ours['seconds']:.2f} s)")
        print(f"  ratio:                         {ours_rate / naive_rate:8.2f}x")
        print(f"start-up (1 image): naive {naive_one['seconds']:.2f} s, vae encode {one['seconds']:.2f} s")
        naive_steady = (args.n - 1) / max(1e-9, naive["seconds"] - naive_one["seconds"])
        ours_steady = (args.n - 1) / max(1e-9, ours["seconds"] - one["seconds"])
        print("after start-up (each run's time less its 1-image time):")
        print(f"  naive loop:                    {naive_steady:8.0f} images/s")
        print(f"  vae encode:                    {ours_steady:8.0f} images/s")
        print(f"  ratio:                         {ours_steady / naive_steady:8.2f}x")

        linked_copies(base / "imgs", base / "many", args.factor)
        big = measure(
            [vae, "encode", str(model), str(base / "many"), "-o", str(base / "many.jsonl"), *workers]
        )
        print(f"peak RSS of vae encode, {args.n:>7} images: {ours['peak_mb']:8.0f} MB")
        print(f"peak RSS of vae encode, {args.n * args.factor:>7} images: {big['peak_mb']:8.0f} MB")
        print(f"peak RSS of the naive loop, {args.n:>7} images: {naive['peak_mb']:4.0f} MB")


def check_same(naive: Path, ours: Path, n: int) -> None:
    """Both wrote the same records (the codes agree to float32 rounding)."""
    with open(naive) as a, open(ours) as b:
        count = 0
        for line_a, line_b in zip(a, b, strict=True):
            ra, rb = json.loads(line_a), json.loads(line_b)
            if (
                ra["path"] != rb["path"]
                or max(abs(x - y) for x, y in zip(ra["mu"], rb["mu"], strict=True)) > 1e-4
            ):
                raise SystemExit(f"the two outputs differ at {ra['path']}")
            count += 1
    if count != n:
        raise SystemExit(f"expected {n} records, got {count}")


if __name__ == "__main__":
    main()
