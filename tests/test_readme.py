"""The README stays true: CI runs its test command verbatim, and its Quickstart runs as written."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (python3 -m venv .*)$", section, flags=re.M)


def test_readme_opens_with_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    assert "vae train --data mnist --likelihood bernoulli" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readmes_test_command():
    test_command = _setup_commands()[1].split(" && ")[-1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    install = _setup_commands()[1].split(" && ")[1]
    assert "torch==2.14.1 torchvision==0.29.1" in install
    assert any("torch==2.14.1 torchvision==0.29.1" in line and "-e '.[dev]'" in line for line in ci)


def _quickstart_lines() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n\n((?: {4}\S.*\n)+)", section).group(1)
    return [line[4:] for line in block.splitlines()]


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_readme_quickstart_runs_as_written_in_a_fresh_shell(small_run, mnist_root, tmp_path):
    """Every Quickstart line, verbatim, in a clean environment, in a folder laid out as after the
    README's first command: .venv, runs/mnist-bernoulli-mlp (the tests' small run) and ../shared/data."""
    repo = tmp_path / "vaecli"
    (repo / "runs").mkdir(parents=True)
    (repo / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    shutil.copytree(small_run, repo / "runs" / "mnist-bernoulli-mlp")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(mnist_root, target_is_directory=True)
    lines = _quickstart_lines()
    assert lines[0].startswith("source .venv/bin/activate") and any(" | " in line for line in lines)
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    result = subprocess.run(
        ["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (repo / "samples.png").is_file() and len(list((repo / "digits").glob("*.png"))) == 16
    assert "-log p(x), importance-sampled (k = 100)" in result.stdout
    rows = result.stdout.splitlines()
    assert rows[-17] == "path,mu_0,mu_1" and all(row.startswith("digits/") for row in rows[-16:])
