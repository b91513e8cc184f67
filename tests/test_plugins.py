"""Plugins through entry points: built-ins, broken and clashing plugins, missing plugins for a
saved model, plugins that return the wrong thing, and a real plugin package installed with pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaecli import registry

ROOT = Path(__file__).resolve().parents[1]
VAE = str(Path(sys.executable).parent / "vae")
BUDGET = ["--epochs", "1", "--limit-train", "500", "--limit-test", "100", "--latent-dim", "2"]
TINY = [*BUDGET, "--hidden", "16"]


def fake_distribution(
    site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]
):
    """A distribution as pip leaves it (a .dist-info folder with entry_points.txt) plus its modules."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for group, entries in entry_points.items():
        lines += [f"[{group}]", *(f"{key} = {value}" for key, value in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


def vae(*argv: str, site: Path | None = None, mnist_root: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    if mnist_root is not None:
        env["VAECLI_DATA_DIR"] = str(mnist_root)
    return subprocess.run([VAE, *argv], capture_output=True, text=True, env=env, timeout=600)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("vae: warning:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_builtins_are_found_through_their_declared_entry_points():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    for kind, reg in registry.BY_KIND.items():
        ours = {e.name: e.entry_point.value for e in reg.entries() if e.distribution == "vaecli"}
        assert ours == declared[reg.group], kind
    assert {"mnist"} <= set(registry.datasets.names())
    assert {"mlp", "conv"} <= set(registry.architectures.names())
    assert {"bernoulli", "gaussian", "categorical"} <= set(registry.likelihoods.names())


def test_broken_plugin_is_reported_and_does_not_break_other_commands(tmp_path, mnist_root):
    site = tmp_path / "site"
    fake_distribution(
        site,
        "broken-vae-plugin",
        {"vaecli.datasets": {"brokenset": "broken_vae_plugin:factory"}},
        {"broken_vae_plugin": "raise ImportError('needs libfoo, which is not installed')\n"},
    )
    listing = vae("plugins", site=site)
    assert listing.returncode == 0
    assert "brokenset" in listing.stdout and "failed" in listing.stdout
    assert "broken-vae-plugin" in listing.stderr and "needs libfoo" in listing.stderr
    entries = json.loads(vae("plugins", "--json", site=site).stdout)["datasets"]
    broken = next(e for e in entries if e["name"] == "brokenset")
    assert broken["loaded"] is False and "needs libfoo" in broken["error"]
    assert broken["distribution"] == "broken-vae-plugin"

    ok = vae("train", *TINY, "--quiet", "--out", str(tmp_path / "run"), site=site, mnist_root=mnist_root)
    assert ok.returncode == 0, ok.stderr
    failed = vae("train", "--data", "brokenset", *TINY, "--out", str(tmp_path / "r2"), site=site)
    assert failed.returncode == 1
    line = one_line(failed.stderr)
    assert "brokenset" in line and "broken-vae-plugin" in line and "needs libfoo" in line
    assert not (tmp_path / "r2").exists()


def test_name_clash_warns_and_dist_name_picks_one(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_distribution(
        site,
        "clashing-arch",
        {"vaecli.architectures": {"mlp": "clashing_arch:mlp"}},
        {"clashing_arch": "from vaecli.architectures import conv as mlp\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(UserWarning, match=r"'mlp' is registered by more than one package; using vaecli:mlp"):
        assert registry.architectures.entry("mlp").distribution == "vaecli"
    assert registry.architectures.entry("clashing-arch:mlp").distribution == "clashing-arch"
    assert registry.architectures.entry("vaecli:mlp").distribution == "vaecli"
    from vaecli.architectures import conv

    assert registry.architectures.load("clashing-arch:mlp") is conv
    listing = vae("plugins", site=site).stdout
    assert "also in clashing-arch" in listing and "DIST:NAME" in listing


def test_saved_model_says_which_plugin_to_install(tmp_path, mnist_root):
    site = tmp_path / "site"
    fake_distribution(
        site,
        "tiny-arch",
        {"vaecli.architectures": {"tinymlp": "tiny_arch:tinymlp"}},
        {"tiny_arch": "from vaecli.architectures import mlp as tinymlp\n"},
    )
    run = tmp_path / "run"
    trained = vae(
        "train", *TINY, "--arch", "tinymlp", "-q", "--out", str(run), site=site, mnist_root=mnist_root
    )
    assert trained.returncode == 0, trained.stderr
    with_plugin = vae("sample", str(run), "--out", str(tmp_path / "ok.png"), site=site)
    assert with_plugin.returncode == 0, with_plugin.stderr

    missing = vae("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert missing.returncode == 1
    line = one_line(missing.stderr)
    assert "needs the architecture 'tinymlp' from the package tiny-arch 1.0" in line
    assert "pip install tiny-arch" in line
    assert not (tmp_path / "s.png").exists()


def test_plugin_that_returns_the_wrong_thing_is_named(tmp_path):
    site = tmp_path / "site"
    source = (
        "from torch import nn\n"
        "def badshape(input_shape, latent_dim, params_per_pixel):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 2 * latent_dim)), nn.Linear(latent_dim, 10)\n"
        "def notmodules(input_shape, latent_dim, params_per_pixel):\n"
        "    return 'encoder'\n"
        "class NotALikelihood:\n"
        "    pass\n"
    )
    fake_distribution(
        site,
        "bad-plugin",
        {
            "vaecli.architectures": {
                "badshape": "bad_plugin:badshape",
                "notmodules": "bad_plugin:notmodules",
            },
            "vaecli.likelihoods": {"notlik": "bad_plugin:NotALikelihood"},
        },
        {"bad_plugin": source},
    )
    cases = {
        "--arch badshape": "architecture 'badshape' (bad-plugin 1.0): decoder gives shape (10,) per image",
        "--arch notmodules": "architecture 'notmodules' (bad-plugin 1.0) must return (encoder, decoder)",
        "--likelihood notlik": "likelihood 'notlik' (bad-plugin 1.0) is not a vaecli Likelihood class",
    }
    for option, message in cases.items():
        result = vae("train", *option.split(), *BUDGET, "--out", str(tmp_path / "run"), site=site)
        assert result.returncode == 1, option
        assert message in one_line(result.stderr), option
        assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def shapes_plugin():
    """The real plugin package in plugins/vaecli-shapes, pip-installed into this environment."""
    package = ROOT / "plugins" / "vaecli-shapes"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*install, str(package)], check=True, capture_output=True, timeout=300)
    yield package
    uninstall = [sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", "vaecli-shapes"]
    subprocess.run(uninstall, check=True, capture_output=True, timeout=300)


@pytest.mark.slow
def test_real_plugin_package_end_to_end(shapes_plugin, tmp_path):
    listing = json.loads(vae("plugins", "--json").stdout)
    provided = {(e["name"], e["distribution"]) for kind in listing.values() for e in kind if e["loaded"]}
    assert {
        ("shapes", "vaecli-shapes"),
        ("resconv", "vaecli-shapes"),
        ("logistic", "vaecli-shapes"),
    } <= provided

    run = tmp_path / "run"
    options = ["--data-opt", "size=16", "--data-opt", "train_images=2000", "--data-opt", "test_images=300"]
    options += ["--arch-opt", "channels=8", "--latent-dim", "4", "--epochs", "3", "--lr", "3e-3"]
    trained = vae("train", "--data", "shapes", "--arch", "resconv", "--likelihood", "logistic", *options,
                  "--out", str(run))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["test_neg_elbo"] < metrics[0]["test_neg_elbo"]
    assert "test_bits_per_dim" in metrics[-1]  # the logistic models 8-bit data

    sampled = vae("sample", str(run), "--n", "16", "--out", str(tmp_path / "s.png"))
    assert sampled.returncode == 0, sampled.stderr

    evaluated = vae("eval", str(run), "--k", "20", "--limit", "100", "--json")  # the model's own dataset
    assert evaluated.returncode == 0, evaluated.stderr
    numbers = json.loads(evaluated.stdout)
    assert numbers["data"] == "vaecli-shapes:shapes" and numbers["images"] == 100
    assert numbers["latent_dim"] == 4
    assert numbers["neg_log_px"] < numbers["neg_elbo"] and "neg_log_px" in numbers["bits_per_dim"]
    saved = sorted((run / "eval").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["neg_log_px"] == numbers["neg_log_px"]

    fresh = (
        f"import json; from vaecli.modelfile import load_model; m, h = load_model({str(run)!r}); "
        "print(json.dumps({'plugins': h['plugins'], 'arch': type(m.decoder).__module__, 'data': h['data']}))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    assert loaded["plugins"]["vaecli-shapes"] == "0.1.0" and loaded["arch"] == "vaecli_shapes.resconv"
    assert loaded["data"]["options"] == {"size": "16", "train_images": "2000", "test_images": "300"}

    pytest_command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(shapes_plugin)]
    own_tests = subprocess.run(pytest_command, capture_output=True, text=True, timeout=300)
    assert own_tests.returncode == 0, own_tests.stdout


def test_objectives_and_callbacks_are_listed_with_their_package():
    listing = json.loads(vae("plugins", "--json").stdout)
    assert {e["name"] for e in listing["objectives"] if e["distribution"] == "vaecli"} == {"elbo", "iwae"}
    assert {e["name"] for e in listing["callbacks"] if e["distribution"] == "vaecli"} == {"tensorboard"}
    assert all(e["loaded"] for kind in ("objectives", "callbacks") for e in listing[kind])


BAD_OBJECTIVES = """
import torch
from vaecli.plugin import Callback, Objective

class Raises(Objective):
    name = "raises"
    def loss(self, terms, progress):
        raise KeyError("forgot to handle this")

class Scalar(Objective):
    name = "scalar"
    def loss(self, terms, progress):
        return -(terms.reconstruction.mean(1) - terms.kl.sum(-1)).mean()

def not_a_class(beta=1):
    return None

class Boom(Callback):
    def on_epoch_end(self, metrics):
        raise ValueError("invalid literal for int() with base 10: 'a'")
"""


def test_a_plugin_objective_or_callback_that_fails_is_named(tmp_path, mnist_root):
    site = tmp_path / "site"
    fake_distribution(
        site,
        "bad-objectives",
        {
            "vaecli.objectives": {
                "raises": "bad_objectives:Raises",
                "scalar": "bad_objectives:Scalar",
                "notaclass": "bad_objectives:not_a_class",
            },
            "vaecli.callbacks": {"boom": "bad_objectives:Boom"},
        },
        {"bad_objectives": BAD_OBJECTIVES},
    )
    cases = {
        "--objective raises": "objective 'raises' (bad-objectives 1.0) failed: KeyError: 'forgot to handle",
        "--objective scalar": "objective 'scalar' (bad-objectives 1.0): loss must be one number per image, "
        "shape (2,), got ()",
        "--objective notaclass": "objective 'notaclass' (bad-objectives 1.0) is not a vaecli Objective class",
        "--callback boom": "callback 'boom' (bad-objectives 1.0) failed in on_epoch_end: ValueError: invalid",
    }
    listed = json.loads(vae("plugins", "--json", site=site).stdout)["objectives"]
    status = {e["name"]: (e["loaded"], e["error"]) for e in listed}
    assert status["raises"] == (True, None) and status["notaclass"][0] is False
    assert "is not a vaecli Objective class (got function)" in status["notaclass"][1]
    for i, (option, message) in enumerate(cases.items()):
        out = tmp_path / f"run{i}"
        result = vae("train", *option.split(), *TINY, "--batch-size", "250", "--out", str(out),
                     site=site, mnist_root=mnist_root)  # fmt: skip
        assert result.returncode in (1, 2), option
        assert message in one_line(result.stderr), (option, result.stderr)
        # An objective is tried before the run folder is written; a callback fails after epoch 1.
        assert out.exists() == ("callback" in option), option


@pytest.mark.slow
def test_a_plugin_objective_and_callback_from_a_real_package(shapes_plugin, tmp_path, mnist_root):
    listing = json.loads(vae("plugins", "--json").stdout)
    assert ("cyclical", "vaecli-shapes") in {(e["name"], e["distribution"]) for e in listing["objectives"]}
    assert ("csv", "vaecli-shapes") in {(e["name"], e["distribution"]) for e in listing["callbacks"]}
    run = tmp_path / "run"
    options = ["--objective", "cyclical", "--objective-opt", "cycles=2", "--callback", "csv"]
    trained = vae("train", *options, *TINY[2:], "--epochs", "4", "--batch-size", "100", "-q",
                  "--out", str(run), mnist_root=mnist_root)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Two cycles of two epochs: beta rises from 0 to 1 over each cycle's first epoch, then stays 1.
    for row in metrics:
        rising = row["epoch"] in (1, 3)
        assert (
            (row["train_loss"] < row["train_neg_elbo"])
            if rising
            else row["train_loss"] == row["train_neg_elbo"]
        )
    import csv

    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r["test_neg_elbo"]) for r in table] == [m["test_neg_elbo"] for m in metrics]
    header = json.loads(
        subprocess.run([sys.executable, "-c", f"import json; from vaecli.modelfile import read_header; "
                        f"print(json.dumps(read_header({str(run / 'model.safetensors')!r})))"],
                       capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    assert header["parts"]["objective"]["distribution"] == "vaecli-shapes"
    assert header["plugins"]["vaecli-shapes"] == "0.1.0"
    assert header["training"]["objective_options"] == {"cycles": 2, "ratio": 0.5, "beta": 1.0}
    bad = vae("train", "--objective", "cyclical", "--objective-opt", "ratio=2", "--out", str(tmp_path / "b"))
    assert bad.returncode == 2
    assert "objective 'cyclical' (vaecli-shapes 0.1.0): option ratio must be in (0, 1]" in one_line(
        bad.stderr
    )


TINYSET = """
import torch
from vaecli.datasets import ImageData


def tinyset(root, split):
    g = torch.Generator().manual_seed({seed} + (split == "test"))
    return ImageData(torch.randint(0, 256, (64, 1, 8, 8), generator=g).to(torch.uint8), None, "tinyset")
"""


def _tinyset_distribution(site: Path, dist: str, seed: int) -> None:
    module = dist.replace("-", "_")
    fake_distribution(site, dist, {"vaecli.datasets": {"tinyset": f"{module}:tinyset"}},
                      {module: TINYSET.format(seed=seed)})  # fmt: skip


@pytest.mark.slow
def test_a_run_keeps_its_own_packages_part_when_another_registers_the_same_name(tmp_path):
    # Trained with zz-data's 'tinyset'; then aa-data, whose name sorts first, registers one too.
    first, both, second = tmp_path / "first", tmp_path / "both", tmp_path / "second"
    _tinyset_distribution(first, "zz-data", seed=1)
    for site in (both, second):
        _tinyset_distribution(site, "aa-data", seed=2)
    _tinyset_distribution(both, "zz-data", seed=1)
    run = tmp_path / "run"
    args = [
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--device",
        "cpu",
        "-q",
    ]
    assert vae("train", "--data", "tinyset", *args, "--out", str(run), site=first).returncode == 0
    assert "data: zz-data:tinyset\n" in (run / "config.yaml").read_text()

    alone = json.loads(vae("eval", str(run), "--k", "4", "--json", site=first).stdout)
    clashing = vae("eval", str(run), "--k", "4", "--json", site=both)
    assert clashing.returncode == 0, clashing.stderr
    assert json.loads(clashing.stdout)["neg_elbo"] == alone["neg_elbo"]  # zz-data's images, not aa-data's
    again = tmp_path / "again"
    retrained = vae("train", "--config", str(run / "config.yaml"), "--out", str(again), site=both)
    assert retrained.returncode == 0, retrained.stderr
    header = json.loads(safe_open_metadata(again / "model.safetensors"))
    assert header["parts"]["dataset"]["distribution"] == "zz-data"

    missing = vae("eval", str(run), "--k", "4", site=second)  # zz-data gone, aa-data there
    assert missing.returncode == 1
    wanted = "needs the dataset 'tinyset' from the package zz-data 1.0, which is not installed: "
    wanted += "pip install zz-data"
    assert one_line(missing.stderr).endswith(wanted)


def safe_open_metadata(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["vaecli-model"]


BAD_PRIORS = """
import torch
from vaecli.plugin import Prior

class Drawn(Prior):
    def sample(self, n, generator, temperature=1.0):
        return torch.randn(n, self.latent_dim, generator=generator) * temperature

class Raises(Drawn):
    name = "raises"
    def log_prob(self, z):
        raise ZeroDivisionError("the scale was 0")

class Late(Drawn):
    name = "late"  # passes vaecli's check on two codes, then fails inside the training step
    def log_prob(self, z):
        if z.shape[0] > 2:
            raise ZeroDivisionError("the scale was 0")
        return -z.square().sum(-1)

class Wrong(Drawn):
    name = "wrong"
    def log_prob(self, z):
        return -z.square().sum(-1)
    def kl(self, mu, logvar):
        return mu.sum()

class Undrawn(Prior):
    name = "undrawn"  # no sample()
    def log_prob(self, z):
        return -z.square().sum(-1)
"""


def test_a_plugin_prior_that_fails_is_named(tmp_path, mnist_root):
    site = tmp_path / "site"
    entries = {name: f"bad_priors:{name.title()}" for name in ("raises", "late", "wrong", "undrawn")}
    fake_distribution(site, "bad-priors", {"vaecli.priors": entries}, {"bad_priors": BAD_PRIORS})
    listed = json.loads(vae("plugins", "--json", site=site).stdout)["priors"]
    found = {(e["name"], e["distribution"]) for e in listed}
    assert {("raises", "bad-priors"), ("normal", "vaecli")} <= found
    cases = {
        "raises": "prior 'raises' (bad-priors 1.0) fails on codes of shape (2, 2): ZeroDivisionError",
        "late": "prior 'late' (bad-priors 1.0) failed: ZeroDivisionError: the scale was 0",
        "wrong": "prior 'wrong' (bad-priors 1.0): kl gives shape () for 2 codes of 2 numbers, expected",
        "undrawn": "prior 'undrawn' (bad-priors 1.0) fails on codes of shape (2, 2): NotImplementedError: "
        "a prior must define sample(n, generator, temperature)",
    }
    for name, message in cases.items():
        out = tmp_path / name
        result = vae("train", "--prior", name, *TINY, "--out", str(out), site=site, mnist_root=mnist_root)
        assert result.returncode == 1, result.stderr
        assert message in one_line(result.stderr), result.stderr
        assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_a_plugin_prior_from_a_real_package(shapes_plugin, tmp_path, mnist_root):
    run = tmp_path / "run"
    trained = vae("train", "--prior", "laplace", "--prior-opt", "scale=0.5", *TINY[2:], "--epochs", "2",
                  "--batch-size", "100", "-q", "--out", str(run), mnist_root=mnist_root)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    header = json.loads(
        subprocess.run([sys.executable, "-c", f"import json; from vaecli.modelfile import read_header; "
                        f"print(json.dumps(read_header({str(run / 'model.safetensors')!r})))"],
                       capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    assert header["model"]["prior"] == "laplace"  # (the parts section says whose)
    assert header["model"]["prior_options"] == {"scale": 0.5, "learn_scale": True}
    assert header["parts"]["prior"]["distribution"] == "vaecli-shapes"
    evaluated = vae("eval", str(run), "--k", "20", "--limit", "50", "--json", mnist_root=mnist_root)
    assert evaluated.returncode == 0, evaluated.stderr
    numbers = json.loads(evaluated.stdout)
    assert numbers["kl_per_dim"] is None and numbers["neg_log_px"] < numbers["neg_elbo"]
    sampled = vae("sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png"))
    assert sampled.returncode == 0, sampled.stderr
