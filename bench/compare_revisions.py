"""vaecli at an earlier revision against this checkout, side by side in one run: the default
recipe's training images/s, its test -ELBO after a few epochs with the same seed, and whether
the two reach the same weights.

    VAECLI_DATA_DIR=../shared/data python bench/compare_revisions.py --before REV [--rounds 3] [--epochs 5]
        [--compile]

REV (a commit, tag or branch) is checked out into a temporary git worktree. Each run is a fresh
process that imports vaecli from one of the two trees (PYTHONPATH; the installed entry points
name the same modules in both). Speed: the two take turns, one one-epoch run each per round, so
a slow spell of a shared machine hits both; each reports its best round. Quality: one run of
``--epochs`` epochs from each, its test -ELBO per epoch, and whether the model files' tensors
are identical. ``--compile``: both train with ``--compile`` (each run compiles before its first
epoch, outside the epoch's images/s; torch's compilation cache is shared by the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
from vaecli.config import TrainConfig
from vaecli.train import train
epochs, out, compiled = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
result = train(TrainConfig(epochs=epochs, device="cpu", out=out, compile=compiled))
print(json.dumps(result.metrics))
"""


def run_once(tree: Path, epochs: int, out: Path, compiled: bool = False) -> list[dict]:
    """One default-recipe run of ``epochs`` epochs with vaecli imported from ``tree``."""
    # (The child runs in a temporary folder: a relative VAECLI_DATA_DIR is made absolute first.)
    data_dir = os.path.abspath(os.environ["VAECLI_DATA_DIR"])
    env = {**os.environ, "PYTHONPATH": str(tree), "VAECLI_DATA_DIR": data_dir}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(epochs), str(out), str(int(compiled))],
        capture_output=True, text=True, env=env, cwd=out.parent, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier revision (commit, tag, branch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="both train with --compile")
    args = parser.parse_args()
    if "VAECLI_DATA_DIR" not in os.environ:
        parser.error("set VAECLI_DATA_DIR to the folder holding MNIST/raw")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before],
                       check=True, capture_output=True)  # fmt: skip
        try:
            trees = {f"before ({args.before})": old, "this checkout": ROOT}
            best = dict.fromkeys(trees, 0.0)
            for r in range(args.rounds):
                for name, tree in trees.items():
                    speed = run_once(tree, 1, Path(tmp) / f"speed-{r}-{len(name)}", args.compile)[0][
                        "images_per_s"
                    ]
                    best[name] = max(best[name], speed)
                    print(f"round {r + 1}: {name:>24}: {speed:8.0f} img/s", flush=True)
            (before, ours) = best.values()
            print(
                f"best epochs: before {before:.0f}, this checkout {ours:.0f} img/s: ratio {ours / before:.3f}"
            )
            runs = {name: Path(tmp) / f"quality-{i}" for i, name in enumerate(trees)}
            rows = {
                name: run_once(tree, args.epochs, runs[name], args.compile) for name, tree in trees.items()
            }
            for name, metrics in rows.items():
                print(
                    f"{name:>24}: test -ELBO by epoch "
                    + " ".join(f"{m['test_neg_elbo']:.4f}" for m in metrics)
                )
            verdict = "identical" if same_weights(*runs.values()) else "different"
            print(f"after {args.epochs} epochs, seed 0: the model files' tensors are {verdict}")
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True
            )


if __name__ == "__main__":
    main()
