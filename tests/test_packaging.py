"""vaecli as a user gets it from pip: the wheel built from this tree holds every module, the entry
points, py.typed and the licence, and a copy installed from it (not this checkout) trains and samples."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of this tree (so the build leaves nothing in the checkout), built offline."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "vaecli", source / "vaecli", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    build = [*PIP, "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(dist)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=300)
    (built,) = dist.glob("vaecli-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_every_module_the_entry_points_py_typed_and_the_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "vaecli").rglob("*.py")}
    assert modules - names == set()  # a subpackage without __init__.py would be missing here
    assert "vaecli/py.typed" in names
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert any(n.startswith(f"{info}/") and "LICENSE" in n for n in names)
    entry_points = configparser.ConfigParser(delimiters="=")  # entry_points.txt is INI
    entry_points.optionxform = str  # keep the names' case
    entry_points.read_string(zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode())
    built = {(group, *entry) for group in entry_points.sections() for entry in entry_points[group].items()}
    declared = {(e.group, e.name, e.value) for e in metadata.distribution("vaecli").entry_points}
    assert built == declared and ("console_scripts", "vae", "vaecli.cli:main") in built


@pytest.mark.slow
def test_a_copy_installed_from_the_wheel_trains_and_samples(wheel, mnist_root, tmp_path):
    target = tmp_path / "site"
    install = [*PIP, "install", "--quiet", "--no-deps", "--no-index", "--target", str(target)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target), "VAECLI_DATA_DIR": str(mnist_root)}

    def vae(*argv: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "vaecli", *argv]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import vaecli; print(vaecli.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)
    listing = json.loads(vae("plugins", "--json").stdout)
    loaded = {
        e["name"] for kind in listing.values() for e in kind if e["distribution"] == "vaecli" and e["loaded"]
    }
    declared = {e.name for e in metadata.distribution("vaecli").entry_points if e.group.startswith("vaecli.")}
    assert loaded == declared and "mnist" in loaded  # every built-in part, loaded from the installed copy
    trained = vae("train", "--data", "mnist", "--epochs", "1", "--limit-train", "500", "--limit-test", "100",
                  "--hidden", "16", "--latent-dim", "2", "-q", "--out", "run")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip() == "run" and (tmp_path / "run" / "model.safetensors").is_file()
    sampled = vae("sample", "run", "--n", "4", "--out", "s.png")
    assert sampled.returncode == 0, sampled.stderr
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
