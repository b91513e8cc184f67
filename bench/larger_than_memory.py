"""Training on a dataset larger than the memory the process may use: the limited run streams the
dataset cache (`--stream auto` finds the cgroup's limit), reading it in blocks in a background
thread, so the process's memory stays flat while the whole set is read every epoch.

    VAECLI_DATA_DIR=../shared/data python bench/larger_than_memory.py [--gib 2.5] [--limit-gib 1.2]

A generated dataset (random 32x32 RGB images, from a throwaway plugin package this script writes)
of ``--gib`` GiB is trained on for one epoch twice, each a fresh `vae train` process: first with
no limit (the images decoded into memory, and the cache written), then inside a memory cgroup of
``--limit-gib`` GiB (the cache streamed). Printed: images/s of each, their ratio, and the peak
memory of each: the process's own ru_maxrss and, for the limited run, the cgroup's high-water
mark (what it was charged: its own memory and the file pages it held at once), and whether the
limited run said it streamed.
Needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory (as on the CI machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup/memory/vaecli-bench")
DATASET = '''
import math
from pathlib import Path
import torch
from vaecli.datasets import ImageData

MARKER = Path(__file__).with_name("noise.marker")


def noise(root, split, n: str = "1000"):
    """Random 32x32 RGB images, made in chunks straight into one tensor."""
    count = int(n) if split == "train" else 2000
    images = torch.empty(count, 3, 32, 32, dtype=torch.uint8)
    g = torch.Generator().manual_seed(int(split == "test"))
    for start in range(0, count, 1 << 15):
        part = images[start : start + (1 << 15)]
        part.copy_(torch.randint(0, 256, part.shape, generator=g, dtype=torch.uint8))
    return ImageData(images, None, "noise")


noise.sources = lambda root, split, n="1000": [MARKER]
noise.shape_of = lambda n="1000": (3, 32, 32)
'''


def write_plugin(site: Path) -> None:
    info = site / "vaecli_noise_bench-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vaecli-noise-bench\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vaecli.datasets]\nnoise = vaecli_noise_bench:noise\n")
    (site / "vaecli_noise_bench.py").write_text(DATASET)
    (site / "noise.marker").write_text("v1")


def run(args: list[str], env: dict[str, str], limit: int | None) -> tuple[dict, int, str]:
    """One `vae train` process (in the cgroup when ``limit``); its last metrics row, its own
    peak resident memory (wait4's ru_maxrss, in bytes) and its stderr."""

    def enter_cgroup() -> None:
        if limit is not None:
            (CGROUP / "cgroup.procs").write_text(str(os.getpid()))

    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-m", "vaecli", *args], env=env, stdout=subprocess.DEVNULL,
                                 stderr=err, preexec_fn=enter_cgroup)  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        said = err.read().decode(errors="replace")
        if child.returncode != 0:
            raise SystemExit(f"vae train failed: {said[-2000:]}")
    out = Path(args[args.index("--out") + 1])
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return row, usage.ru_maxrss * 1024, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.5, help="size of the generated training set")
    parser.add_argument("--limit-gib", type=float, default=1.2, help="memory the limited run may use")
    args = parser.parse_args()
    n = int(args.gib * 2**30 // (3 * 32 * 32))
    limit = int(args.limit_gib * 2**30)
    with tempfile.TemporaryDirectory() as tmp:
        site, cache = Path(tmp) / "site", Path(tmp) / "cache"
        write_plugin(site)
        env = {**os.environ, "PYTHONPATH": str(site), "VAECLI_DATA_CACHE": str(cache),
               "VAECLI_PROGRESS_SECONDS": "3600"}  # fmt: skip
        common = ["train", "--data", "noise", "--data-opt", f"n={n}", "--epochs", "1", "--device", "cpu",
                  "--likelihood", "bernoulli", "--quiet"]  # fmt: skip
        print(
            f"{n} images of 3x32x32, {n * 3072 / 2**30:.2f} GiB; the limited run may use {args.limit_gib} GiB"
        )
        free, peak_free, _ = run([*common, "--out", f"{tmp}/free"], env, None)
        # The first run left the cache's pages in the page cache, charged to this process's own
        # cgroup: dropped, so that every page the limited run touches is read and charged anew.
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1")
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(str(limit))
        try:
            (CGROUP / "memory.max_usage_in_bytes").write_text("0")
            capped, peak_capped, said = run([*common, "--out", f"{tmp}/capped"], env, limit)
            cgroup_peak = int((CGROUP / "memory.max_usage_in_bytes").read_text())
        finally:
            CGROUP.rmdir()
        gib = 2**30
        print(f"in memory (decoded, no limit): {free['images_per_s']:8.0f} images/s, "
              f"peak RSS {peak_free / gib:.2f} GiB")  # fmt: skip
        rate, rss, group = capped["images_per_s"], peak_capped / gib, cgroup_peak / gib
        how = "streamed" if "streaming them from the host" in said else "NOT streamed"
        print(f"{how}, {args.limit_gib} GiB limit: {rate:8.0f} images/s, "
              f"peak RSS {rss:.2f} GiB (the cgroup's: {group:.2f} GiB)")  # fmt: skip
        print(
            f"ratio: {capped['images_per_s'] / free['images_per_s']:.2f} of the in-memory images/s; "
            f"test -ELBO {free['test_neg_elbo']:.2f} and {capped['test_neg_elbo']:.2f}"
        )


if __name__ == "__main__":
    main()
