"""A plugin package written from docs/plugins.md with a new author's mistakes: every failure is
one line naming the part and its package; clashing names follow a stated rule and warn once;
non-finite training fails cleanly; model headers that contradict themselves are damaged files."""

from __future__ import annotations

import importlib
import json
import math
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_plugins import BUDGET, TINY, fake_distribution, one_line, vae

from vaecli import registry
from vaecli.cli import main
from vaecli.likelihoods import dequantise
from vaecli.modelfile import FORMAT

CARELESS = '''
import torch
from torch import nn
from vaecli.datasets import mnist
from vaecli.likelihoods import Bernoulli
from vaecli.architectures import mlp

def keyset(root, split):
    raise KeyError("forgot to handle this")

def fashionlike(root, split):
    return mnist(root, split)

def intarch(input_shape, latent_dim, params_per_pixel, width="a"):
    int(width)

class Fragile(nn.Module):
    """Works on the two images vaecli checks a model with, fails on a real batch."""
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, x):
        if x.shape[0] > 2:
            raise IndexError("batch too large for this encoder")
        return self.inner(x)

def fragile(input_shape, latent_dim, params_per_pixel):
    encoder, decoder = mlp(input_shape, latent_dim, params_per_pixel, hidden=[16])
    return Fragile(encoder), decoder

def wrongshape(x, params, extra):  # a function where a Likelihood class belongs
    return x

class Pixelwise(Bernoulli):  # forgot to sum over the pixels
    def log_prob(self, x, params):
        return -nn.functional.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none")

class Scalar(Bernoulli):  # summed over the batch too
    def log_prob(self, x, params):
        return super().log_prob(x, params).sum()

class BadMean(Bernoulli):  # kept the parameter axis
    def mean(self, params):
        return torch.sigmoid(params)

class BadDraws(Bernoulli):  # gave each image's draws a row of their own
    def log_prob_draws(self, x, params):
        return super().log_prob_draws(x, params).view(x.shape[0], -1)

class BadFit(Bernoulli):  # dropped the parameter axis: copying it would broadcast silently
    def constant_fit(self, images):
        return super().constant_fit(images)[0]

class Unwritten(Bernoulli):  # fails only when a command draws pixels
    def sample(self, params, generator=None):
        raise RuntimeError("sampling is not written yet")

class NanLik(Bernoulli):
    def log_prob(self, x, params):
        return super().log_prob(x, params) * float("nan")

class EvalNan(Bernoulli):  # finite in training, NaN on the test set
    def log_prob(self, x, params):
        value = super().log_prob(x, params)
        return value if self.training else value * float("nan")
'''

ENTRIES = {
    "vaecli.datasets": {"keyset": "careless_plugin:keyset", "fashionlike": "careless_plugin:fashionlike"},
    "vaecli.architectures": {"intarch": "careless_plugin:intarch", "fragile": "careless_plugin:fragile"},
    "vaecli.likelihoods": {
        name: f"careless_plugin:{target}"
        for name, target in (
            ("wrongshape", "wrongshape"),
            ("pixelwise", "Pixelwise"),
            ("scalar", "Scalar"),
            ("badmean", "BadMean"),
            ("baddraws", "BadDraws"),
            ("badfit", "BadFit"),
            ("unwritten", "Unwritten"),
            ("nanlik", "NanLik"),
            ("evalnan", "EvalNan"),
        )  # fmt: skip
    },
}
PLUGIN = "(careless-plugin 1.0)"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("careless") / "site"
    fake_distribution(folder, "careless-plugin", ENTRIES, {"careless_plugin": CARELESS})
    return folder


@pytest.fixture
def cli(site, capsys, monkeypatch, mnist_root):
    """``vae ARGV`` in this process with the careless plugin installed (on sys.path): its exit
    code, stdout and stderr. ``cli.uninstall()`` takes the plugin away again."""
    monkeypatch.syspath_prepend(str(site))

    def run(*argv: str) -> SimpleNamespace:
        code = main(list(argv))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    run.uninstall = lambda: (sys.path.remove(str(site)), importlib.invalidate_caches())  # type: ignore[attr-defined]
    return run


def failed_line(result, code: int = 1) -> str:
    assert result.returncode == code, result.stderr
    return one_line(result.stderr)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--data keyset", f"dataset 'keyset' {PLUGIN} failed to start: KeyError: 'forgot to handle this'"),
        ("--arch intarch", f"architecture 'intarch' {PLUGIN} failed to start: ValueError: invalid literal"),
        (
            "--likelihood wrongshape",
            f"likelihood 'wrongshape' {PLUGIN} is not a vaecli Likelihood class (got function)",
        ),  # fmt: skip
        (
            "--likelihood pixelwise",
            f"likelihood 'pixelwise' {PLUGIN}: log_prob gives shape (2, 1, 28, 28) "
            "for 2 images, expected (2,)",
        ),  # fmt: skip
        ("--likelihood scalar", f"likelihood 'scalar' {PLUGIN}: log_prob gives shape () for 2 images"),
        (
            "--likelihood badmean",
            f"likelihood 'badmean' {PLUGIN}: mean gives shape (2, 1, 1, 28, 28) for 2 "
            "images, expected (2, 1, 28, 28)",
        ),  # fmt: skip
        (
            "--likelihood baddraws",
            f"likelihood 'baddraws' {PLUGIN}: log_prob_draws gives shape (1, 2) for 2 draws of 1 "
            "image, expected (2,)",
        ),  # fmt: skip
        (
            "--likelihood badfit",
            f"likelihood 'badfit' {PLUGIN}: constant_fit gives shape (1, 28, 28), expected (1, 1, 28, 28)",
        ),  # fmt: skip
        ("--arch fragile", f"architecture 'fragile' {PLUGIN} failed: IndexError: batch too large"),
    ],
)
def test_a_failure_inside_plugin_code_names_the_part_and_its_package(cli, tmp_path, option, message):
    run = tmp_path / "run"
    result = cli("train", *option.split(), *BUDGET, "--out", str(run))
    assert message in failed_line(result)
    assert not run.exists()


def test_plugins_lists_a_function_registered_as_a_likelihood_as_failed(cli):
    entries = json.loads(cli("plugins", "--json").stdout)["likelihoods"]
    status = {e["name"]: e for e in entries}
    assert status["wrongshape"]["loaded"] is False
    assert "is not a vaecli Likelihood class (got function)" in status["wrongshape"]["error"]
    assert status["pixelwise"]["loaded"] is True  # (a shape is checked when a model is built)


def test_a_plugin_failing_in_a_later_command_is_named(cli, tmp_path):
    run = tmp_path / "run"
    trained = cli("train", "--likelihood", "unwritten", *TINY, "-q", "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    assert cli("sample", str(run), "--out", str(tmp_path / "mean.png")).returncode == 0
    drawn = cli("sample", str(run), "--mode", "sample", "--out", str(tmp_path / "s.png"))
    line = failed_line(drawn)
    assert f"likelihood 'unwritten' {PLUGIN} failed: RuntimeError: sampling is not written yet" in line
    assert not (tmp_path / "s.png").exists()


def test_a_non_finite_first_step_names_the_parts_not_the_learning_rate(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--likelihood", "nanlik", *TINY, "--out", str(run))
    line = failed_line(result)
    assert "non-finite reconstruction at epoch 1, step 1, before any update" in line
    assert f"likelihood 'nanlik' {PLUGIN}" in line and "dataset 'mnist' (vaecli" in line
    assert "--lr" not in line
    assert not run.exists()  # nothing to resume: the retry needs no --force


def test_an_epoch_whose_every_step_was_skipped_fails(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--likelihood", "nanlik", "--on-nan", "skip", "--lr-schedule", "cosine", *TINY,
                 "--out", str(run))  # fmt: skip
    line = failed_line(result)
    assert "every step of epoch 1 had a non-finite loss or gradient and was skipped" in line
    assert f"likelihood 'nanlik' {PLUGIN}" in line
    assert "lr_scheduler" not in result.stderr
    assert not run.exists()


def _strict(text: str):
    def refuse(constant: str):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_are_strict_json_with_null_for_a_non_finite_number(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--likelihood", "evalnan", *TINY, "-q", "--out", str(run))
    assert result.returncode == 0, result.stderr
    rows = [_strict(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["test_neg_elbo"] is None and math.isfinite(rows[0]["train_neg_elbo"])
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        assert _strict(f.metadata()[FORMAT])["metrics"]["test_neg_elbo"] is None
    from vaecli.fileio import strict_json

    assert strict_json({"a": [float("inf"), 1.5, float("nan")]}) == '{"a": [null, 1.5, null]}'


def test_resume_without_the_plugin_names_the_package_to_install(cli, site, tmp_path):
    run = tmp_path / "run"
    trained = cli("train", "--data", "fashionlike", *TINY, "-q", "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "epochs": 2}))
    cli.uninstall()
    line = failed_line(cli("train", "--resume", str(run)))
    assert "needs the dataset 'fashionlike' from the package careless-plugin 1.0, which is not" in line
    assert "pip install careless-plugin" in line
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    resumed = cli("train", "--resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr


def test_clashing_names_use_the_first_package_by_name_and_warn_once_when_used(tmp_path, mnist_root):
    first, second = tmp_path / "first", tmp_path / "second"
    # zzz-twins comes first on the path, so the old "first found" rule would pick it.
    fake_distribution(first, "zzz-twins", {"vaecli.likelihoods": {"twin": "zzz_twins:Twin"}},
                      {"zzz_twins": "from vaecli.likelihoods import Gaussian as Twin\n"})  # fmt: skip
    fake_distribution(second, "aaa-twins", {"vaecli.likelihoods": {"twin": "aaa_twins:Twin"}},
                      {"aaa_twins": "from vaecli.likelihoods import Bernoulli as Twin\n"})  # fmt: skip
    site = Path(f"{first}:{second}")
    run = tmp_path / "run"
    used = vae("train", "--likelihood", "twin", *TINY, "-q", "--out", str(run), site=site,
               mnist_root=mnist_root)  # fmt: skip
    assert used.returncode == 0, used.stderr
    warned = [line for line in used.stderr.splitlines() if "registered by more than one package" in line]
    assert len(warned) == 1, used.stderr
    assert "using aaa-twins:twin, the first package by name (also: zzz-twins:twin" in warned[0]
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()[FORMAT])["parts"]["likelihood"]["distribution"] == "aaa-twins"
    unused = vae("train", *TINY, "-q", "--out", str(tmp_path / "other"), site=site, mnist_root=mnist_root)
    assert unused.returncode == 0 and "registered by more than one package" not in unused.stderr


def test_a_clash_warns_once_per_process(tmp_path, monkeypatch):
    for name in ("bbb-twins", "ccc-twins"):
        module = name.replace("-", "_")
        fake_distribution(tmp_path, name, {"vaecli.architectures": {"twin": f"{module}:twin"}},
                          {module: "from vaecli.architectures import mlp as twin\n"})  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = registry.Registry("architecture")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [reg.entry("twin").distribution for _ in range(3)] == ["bbb-twins"] * 3
    assert len(caught) == 1


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, mnist_root) -> Path:
    run = tmp_path_factory.mktemp("header") / "run"
    assert main(["train", *TINY, "-q", "--out", str(run)]) == 0
    return run / "model.safetensors"


def _with_header(model_file: Path, path: Path, change) -> Path:
    with safe_open(str(model_file), framework="pt") as f:
        metadata = f.metadata()
    header = json.loads(metadata[FORMAT])
    change(header)
    save_file(load_file(str(model_file)), str(path), metadata={**metadata, FORMAT: json.dumps(header)})
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h["model"].update(likelihood="gaussian"), "names the likelihood 'gaussian' but its parts"),
        (lambda h: h["model"].update(likelihood="poisson"), "names the likelihood 'poisson' but its parts"),
        (lambda h: h["model"].update(architecture="hyperconv"), "names the architecture 'hyperconv' but"),
        (lambda h: h["data"].update(name="cifar"), "its data section names the dataset 'cifar'"),
        (lambda h: h.update(format_version=-1), "format_version must be a whole number from 1, not -1"),
        (lambda h: h["model"]["architecture_options"].update(hidden=[-5]), "option hidden wants positive"),
    ],
)
def test_a_model_header_that_contradicts_itself_is_a_damaged_file(model_file, tmp_path, capsys, change,
                                                                  message):  # fmt: skip
    bad = _with_header(model_file, tmp_path / "bad.safetensors", change)
    assert main(["sample", str(bad), "--out", str(tmp_path / "s.png")]) == 1
    line = one_line(capsys.readouterr().err)
    assert str(bad) in line and message in line and ("damaged" in line or "format_version" in line)
    assert not (tmp_path / "s.png").exists()


def test_dequantise_on_the_open_interval_never_gives_0_or_1():
    images = torch.tensor([0, 255], dtype=torch.uint8).repeat(1 << 22)
    zero_noise = torch.Generator().manual_seed(0)
    closed = dequantise(images, zero_noise)
    assert closed.min() >= 0 and closed.max() <= 1
    opened = dequantise(images, torch.Generator().manual_seed(0), open_interval=True)
    assert opened.min() > 0 and opened.max() < 1
    # The same draw, moved only where float32 rounding put it on an end.
    inside = (closed > 0) & (closed < 1)
    assert torch.equal(opened[inside], closed[inside])
