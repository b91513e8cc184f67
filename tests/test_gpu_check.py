"""bench/gpu_check.sh and bench/gpu_pack.sh, the parts that run without a GPU: its parts named
wrong, MNIST packed for a machine that cannot see ../shared and unpacked there into the layout
vaecli reads, and a clear stop where torch sees no CUDA device."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _checkout(tmp_path: Path) -> Path:
    """A checkout holding the two scripts (they work from the folder above their own)."""
    (tmp_path / "repo" / "bench").mkdir(parents=True)
    for name in ("gpu_check.sh", "gpu_pack.sh"):
        shutil.copy(BENCH / name, tmp_path / "repo" / "bench" / name)
    return tmp_path / "repo"


def _bash(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "VAECLI_DATA_DIR"} | env
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=environ, timeout=120
    )


def test_a_part_it_does_not_know_is_one_line_and_exit_2(tmp_path):
    done = _bash(_checkout(tmp_path) / "bench" / "gpu_check.sh", "tests", "speed", OUT=str(tmp_path))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "gpu_check.sh: no part 'speed' (tests, throughput, profile, quality, layout)\n"
    assert not (tmp_path / "gpu_check.log").exists()


def test_packing_wants_a_folder_with_mnist(tmp_path):
    done = _bash(_checkout(tmp_path) / "bench" / "gpu_pack.sh", VAECLI_DATA_DIR=str(tmp_path))
    assert done.returncode == 1 and done.stderr == f"gpu_pack.sh: no MNIST/raw/ in {tmp_path}\n"
    assert not (tmp_path / "repo" / ".gpu_data").exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the stop where there is no GPU")
def test_packed_mnist_is_unpacked_where_it_is_read_and_no_gpu_stops_it(mnist_root, tmp_path):
    repo = _checkout(tmp_path)
    packed = _bash(repo / "bench" / "gpu_pack.sh", VAECLI_DATA_DIR=str(mnist_root))
    assert packed.returncode == 0, packed.stderr
    assert (repo / ".gpu_data" / "mnist.tar.gz").is_file() and not list((repo / ".gpu_data").glob("*.part"))

    out = tmp_path / "out"
    out.mkdir()
    done = _bash(repo / "bench" / "gpu_check.sh", PYTHON=sys.executable, OUT=str(out), TMPDIR=str(tmp_path))
    log = (out / "gpu_check.log").read_text()
    assert done.returncode == 1 and f"!! torch {torch.__version__} sees no CUDA device" in log
    unpacked = Path(log.split("MNIST unpacked to ")[1].split("\n")[0])
    from vaecli.datasets import mnist

    labels = mnist(unpacked, "train", download=False).labels[:10].tolist()
    assert labels == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # (shared/data/README.md's known first labels)
