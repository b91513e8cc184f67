"""The README's two set-up commands stay true: CI runs the test command verbatim."""

import re
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
