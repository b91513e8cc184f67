"""The scripts in examples/ run as written (with a small budget)."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_python_api_example(mnist_root: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        str(ROOT / "examples" / "python_api.py"),
        "--epochs",
        "1",
        "--limit-train",
        "2000",
    ]
    env = {**os.environ, "VAECLI_DATA_DIR": str(mnist_root)}
    result = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "test -ELBO" in result.stdout
    assert Image.open(out / "example-samples.png").size[0] > 28 * 8


def test_shell_quickstart_example(mnist_root: Path, tmp_path: Path):
    env = {**os.environ, "VAECLI_DATA_DIR": str(mnist_root), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    script = ROOT / "examples" / "shell_quickstart.sh"
    extra = ["--epochs", "1", "--limit-train", "2000", "--limit-test", "500", "--out", str(tmp_path / "r")]
    result = subprocess.run(
        ["bash", str(script), *extra], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / "samples.png").is_file() and (tmp_path / "r" / "drawn.png").is_file()
