"""`vae eval` and vaecli.evaluation: the importance-sampled log p(x) against numerical
integration over a 2-D latent space, the ELBO against the same grid and torch.distributions,
active units on a model that ignores latent dimensions by construction, chunking, seeds, and
the command with its bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal, kl_divergence

from vaecli.cli import main
from vaecli.errors import UsageError, VaeError
from vaecli.evaluation import chunk_shape, default_samples_at_once, evaluate
from vaecli.likelihoods import Bernoulli, Gaussian
from vaecli.models import VAE, ModelSpec, build_model

SHAPE = (1, 3, 4)  # 12 binary pixels: small enough to integrate p(x) = E_p(z)[p(x|z)] on a grid
PIXELS = 12


def linear_vae(latent_dim: int, used: int, seed: int = 0) -> VAE:
    """q(z|x) linear in x; p(x|z) = Bernoulli(sigmoid(W z + b)) with W zero beyond ``used`` dims."""
    g = torch.Generator().manual_seed(seed)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 2 * latent_dim))
    decoder = nn.Sequential(nn.Linear(latent_dim, PIXELS), nn.Unflatten(1, (1, *SHAPE)))
    with torch.no_grad():
        decoder[0].weight.zero_()
        decoder[0].weight[:, :used] = 1.5 * torch.randn(PIXELS, used, generator=g)
        decoder[0].bias.copy_(torch.randn(PIXELS, generator=g))
    return VAE(encoder, decoder, Bernoulli(), latent_dim, SHAPE).eval()


def draw_images(model: VAE, n: int, seed: int) -> torch.Tensor:
    """Binary images from the model itself: z ~ N(0, I), x ~ p(x|z)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=g)
    with torch.no_grad():
        return torch.bernoulli(torch.sigmoid(model.decode(z)[:, 0]), generator=g)


class Grid:
    """A square grid over a 2-D z, for integrals against p(z), p(x|z) and q(z|x)."""

    def __init__(self, step: float, limit: float = 7.0) -> None:
        axis = torch.arange(-limit, limit + step / 2, step, dtype=torch.float64)
        self.z = torch.cartesian_prod(axis, axis)
        self.log_area = 2 * math.log(step)

    def log_px_given_z(self, model: VAE, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) for every image and grid point (N, G): for binary x, the sum over pixels of
        x l - softplus(l) with logits l, as one product (checked against torch.distributions)."""
        with torch.no_grad():
            logits = model.decode(self.z.float()).double()[:, 0].reshape(len(self.z), PIXELS)
        flat = x.reshape(-1, PIXELS).double()
        result = flat @ logits.T - torch.nn.functional.softplus(logits).sum(1)
        reference = TorchBernoulli(logits=logits[::97]).log_prob(flat[0]).sum(-1)
        torch.testing.assert_close(result[0, ::97], reference)
        return result

    def log_px(self, model: VAE, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log sum_g p(x|z_g) p(z_g) dA."""
        log_prior = Normal(0.0, 1.0).log_prob(self.z).sum(1)
        return torch.logsumexp(self.log_px_given_z(model, x) + log_prior, 1) + self.log_area

    def posterior(self, model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(z|x) per image (N, 2)."""
        log_joint = self.log_px_given_z(model, x) + Normal(0.0, 1.0).log_prob(self.z).sum(1)
        weights = torch.softmax(log_joint, 1)
        mean = weights @ self.z
        var = weights @ self.z.square() - mean.square()
        return mean, var.log()

    def elbo(self, model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_q[log p(x|z)] (by quadrature against q) and KL(q || N(0, I)) (torch.distributions)."""
        with torch.no_grad():
            mu, logvar = (t.double() for t in model.encode(x.float()))
        q = Normal(mu[:, None], torch.exp(0.5 * logvar)[:, None])
        weights = torch.softmax(q.log_prob(self.z[None]).sum(-1), 1)
        reconstruction = (weights * self.log_px_given_z(model, x)).sum(1)
        kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
        return reconstruction, kl


def fit_encoder(model: VAE, grid: Grid, widen: float = 0.0, shift: float = 0.0) -> None:
    """Set the linear encoder to the least-squares fit of the true posterior's mean and
    log-variance (from the grid), then make it worse by ``shift`` and ``widen`` if asked."""
    x = draw_images(model, 400, seed=99)
    mean, logvar = grid.posterior(model, x)
    inputs = torch.cat([x.reshape(-1, PIXELS).double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(inputs, torch.cat([mean, logvar], 1)).solution  # (13, 4)
    with torch.no_grad():
        linear = model.encoder[1]
        linear.weight.copy_(solution[:PIXELS].T)
        linear.bias.copy_(solution[PIXELS] + torch.tensor([shift, shift, widen, widen], dtype=torch.float64))


@pytest.fixture(scope="module")
def grid() -> Grid:
    return Grid(step=0.05)


@pytest.fixture(scope="module")
def good_model(grid: Grid) -> VAE:
    model = linear_vae(latent_dim=2, used=2)
    fit_encoder(model, Grid(step=0.1))
    return model


@pytest.fixture(scope="module")
def poor_model(grid: Grid) -> VAE:
    """q(z|x) too wide and off-centre: a gap of several nats."""
    model = linear_vae(latent_dim=2, used=2)
    fit_encoder(model, Grid(step=0.1), widen=1.5, shift=0.5)
    return model


def test_importance_sampled_log_px_matches_numerical_integration(good_model, grid):
    x = draw_images(good_model, 20, seed=1)
    exact = grid.log_px(good_model, x)
    report = evaluate(good_model, x, k=20000, seed=0)
    estimate = report.per_image.log_px
    assert (estimate - exact).abs().max() < 0.05
    assert abs(report.neg_log_px + exact.mean().item()) < 0.02
    # The ELBO is below log p(x), image by image; its terms agree with quadrature against q.
    assert (exact - report.per_image.elbo).min() > 0
    assert report.neg_elbo > -exact.mean().item() + 0.01
    reconstruction, kl = grid.elbo(good_model, x)
    assert report.reconstruction == pytest.approx(-reconstruction.mean().item(), abs=0.05)
    assert report.kl == pytest.approx(kl.mean().item(), abs=1e-5)
    assert report.gap == pytest.approx(report.neg_elbo - report.neg_log_px, abs=1e-9)
    assert report.bits_per_dim is None  # binarised data: no bits/dim


def test_the_estimate_grows_with_k_towards_log_px(poor_model, grid):
    x = draw_images(poor_model, 200, seed=2)
    exact = grid.log_px(poor_model, x).mean().item()
    reconstruction, kl = grid.elbo(poor_model, x)
    exact_elbo = (reconstruction - kl).mean().item()
    assert exact - exact_elbo > 2.0  # a poor q: a real gap to close
    means = [
        np.mean([evaluate(poor_model, x, k=k, seed=s).per_image.log_px.mean().item() for s in range(3)])
        for k in (1, 4, 16, 64, 256)
    ]
    assert all(later > earlier for earlier, later in zip(means, means[1:], strict=False)), means
    assert means[-1] < exact + 0.05
    assert exact - means[-1] < 0.5 * (exact - exact_elbo)


def test_k_equal_to_one_is_the_elbo_in_expectation(poor_model, grid):
    x = draw_images(poor_model, 200, seed=3)
    reconstruction, kl = grid.elbo(poor_model, x)
    exact_elbo = (reconstruction - kl).mean().item()
    draws = torch.stack([evaluate(poor_model, x, k=1, seed=s).per_image.log_px for s in range(20)])
    standard_error = draws.std().item() / math.sqrt(draws.numel())
    assert abs(draws.mean().item() - exact_elbo) < 4 * standard_error


def test_active_units_and_kl_per_dimension_when_the_decoder_ignores_dimensions():
    """Dims 0, 1 are used; the decoder ignores 2 and 3. The encoder moves dim 2's mean a little
    (Cov_x below 0.01) and leaves dim 3 at the prior: 2 active units, KL 0 for dim 3."""
    model = linear_vae(latent_dim=4, used=2, seed=5)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        weight, bias = model.encoder[1].weight, model.encoder[1].bias
        weight.zero_()
        bias.zero_()
        weight[0:2] = torch.randn(2, PIXELS, generator=g)  # mu_0, mu_1
        weight[2] = 0.02 * torch.randn(PIXELS, generator=g)  # mu_2: a little
        weight[4:6] = 0.1 * torch.randn(2, PIXELS, generator=g)  # logvar_0, logvar_1
        bias[4:6] = -2.0
    x = draw_images(model, 500, seed=7)
    report = evaluate(model, x, k=4, seed=0)

    flat, weight, bias = x.reshape(-1, PIXELS).double(), weight.detach().double(), bias.detach().double()
    mu, logvar = flat @ weight[:4].T + bias[:4], flat @ weight[4:].T + bias[4:]
    activity = mu.var(0, unbiased=False)
    kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).mean(0)
    assert activity[0] > 0.1 and activity[1] > 0.1 and 0 < activity[2] < 0.01 and activity[3] == 0
    assert report.active_units == 2
    np.testing.assert_allclose(report.activity, activity.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(report.kl_per_dim, kl.numpy(), rtol=1e-4, atol=1e-7)
    assert report.kl_per_dim[3] == 0.0
    assert report.kl == pytest.approx(kl.sum().item(), rel=1e-5)


def test_same_seed_same_numbers_and_any_batch_size_agrees(good_model, grid):
    x = draw_images(good_model, 30, seed=4)
    exact = grid.log_px(good_model, x)
    for batch_size in (64, 5000, None):
        first = evaluate(good_model, x, k=1000, seed=11, batch_size=batch_size)
        again = evaluate(good_model, x, k=1000, seed=11, batch_size=batch_size)
        assert torch.equal(first.per_image.log_px, again.per_image.log_px)
        assert torch.equal(first.per_image.elbo, again.per_image.elbo)
        # Chunks of any size estimate the same thing.
        assert abs(first.per_image.log_px.mean() - exact.mean()) < 0.03, batch_size
        assert (first.per_image.log_px - exact).abs().max() < 0.2, batch_size
    other = evaluate(good_model, x, k=1000, seed=12)
    assert not torch.equal(other.per_image.log_px, first.per_image.log_px)


@pytest.mark.parametrize("k", [1, 3, 1000, 5000, 100_000])
@pytest.mark.parametrize("at_once", [1, 10, 4096])
def test_chunks_hold_at_most_the_samples_asked_for(k, at_once):
    images, samples = chunk_shape(k, at_once)
    assert images >= 1 and 1 <= samples <= k
    assert images * samples <= at_once
    assert samples == k or images == 1  # all of an image's samples together, or one image at a time


def test_chunk_size_follows_the_decoder_output():
    """A 256-way categorical decoder outputs ~200x more per sample than a Bernoulli one."""
    small = build_model(ModelSpec((1, 28, 28), 8, architecture_options={"hidden": "32"}))
    large = build_model(
        ModelSpec((1, 28, 28), 8, architecture_options={"hidden": "32"}, likelihood="categorical")
    )
    per_sample_large = 4 * 28 * 28 * 256
    assert default_samples_at_once(large, (1, 28, 28)) * per_sample_large <= 512 << 20
    assert default_samples_at_once(small, (1, 28, 28)) > 50 * default_samples_at_once(large, (1, 28, 28))


def test_chunk_size_counts_the_layers_of_an_autoregressive_likelihood():
    """pixelcnn's log p(x|z) holds `width` numbers per pixel for every sample, on top of the
    decoder's outputs: at width 64, 64 x 784 floats a sample, 200 KB; chunks shrink to fit."""
    spec = {"architecture_options": {"hidden": "32"}, "likelihood": "pixelcnn"}
    wide = build_model(ModelSpec((1, 28, 28), 8, **spec, likelihood_options={"width": "64"}))
    narrow = build_model(ModelSpec((1, 28, 28), 8, **spec, likelihood_options={"width": "2"}))
    assert default_samples_at_once(wide, (1, 28, 28)) * 4 * 64 * 784 <= 256 << 20
    assert default_samples_at_once(narrow, (1, 28, 28)) > 5 * default_samples_at_once(wide, (1, 28, 28))


def test_bits_per_dim_for_8_bit_likelihoods():
    torch.manual_seed(0)
    model = build_model(ModelSpec((1, 4, 4), 2, architecture_options={"hidden": "8"}, likelihood="gaussian"))
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    x = model.likelihood.prepare(images, torch.Generator().manual_seed(0))
    report = evaluate(model, x, k=8)
    assert isinstance(model.likelihood, Gaussian)
    assert report.bits_per_dim == pytest.approx(
        {
            "neg_elbo": report.neg_elbo / (16 * math.log(2)),
            "neg_log_px": report.neg_log_px / (16 * math.log(2)),
        }
    )


def test_bad_arguments_and_non_finite_models(good_model):
    x = draw_images(good_model, 5, seed=0)
    with pytest.raises(UsageError, match="k must be at least 1"):
        evaluate(good_model, x, k=0)
    broken = linear_vae(2, 2)
    with torch.no_grad():
        broken.decoder[0].bias[3] = float("nan")
    with pytest.raises(VaeError, match="non-finite log-likelihood for 5 of 5 images"):
        evaluate(broken, x, k=3)


# ---- the command ----------------------------------------------------------------------------


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("vae: warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def run_dir(small_run: Path, tmp_path: Path, monkeypatch, mnist_root) -> Path:
    """A private copy of the small trained run (eval writes its reports into it)."""
    monkeypatch.setenv("VAECLI_DATA_DIR", str(mnist_root))
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    return copy


def test_cli_table_json_and_eval_files(run_dir, capsys):
    code, out, err = run(capsys, "eval", str(run_dir), "--k", "5", "--limit", "1000", "--json")
    assert code == 0, err
    numbers = json.loads(out)
    assert numbers == json.loads((run_dir / "eval" / "test-k5-first1000.json").read_text())
    assert numbers["images"] == 1000 and numbers["k"] == 5 and numbers["split"] == "test"
    assert numbers["data"] == "mnist" and numbers["latent_dim"] == 8 and len(numbers["kl_per_dim"]) == 8
    assert numbers["neg_elbo"] == pytest.approx(numbers["reconstruction"] + numbers["kl"])
    assert numbers["neg_log_px"] < numbers["neg_elbo"] and numbers["gap"] > 0
    assert 0 <= numbers["active_units"] <= 8 and "bits_per_dim" not in numbers
    # The same 1000 test images binarised as training binarised them: training's own test -ELBO
    # (one sample per image) agrees within Monte Carlo noise.
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert numbers["neg_elbo"] == pytest.approx(metrics[-1]["test_neg_elbo"], abs=1.0)

    code, out, err = run(capsys, "eval", str(run_dir), "--k", "5", "--limit", "50")
    assert code == 0, err
    for label in ("-ELBO", "reconstruction", "KL(q(z|x) || p(z))", "-log p(x), importance-sampled (k = 5)",
                  "gap log p(x) - ELBO", "active units:", "Cov_x(E_q[z])", "50 images"):  # fmt: skip
        assert label in out, label
    # One file per setting: the quick look did not replace the larger evaluation.
    assert json.loads((run_dir / "eval" / "test-k5-first50.json").read_text())["images"] == 50
    assert json.loads((run_dir / "eval" / "test-k5-first1000.json").read_text()) == numbers


def test_cli_model_file_and_train_split(run_dir, capsys):
    model_file = run_dir / "model.safetensors"
    code, out, err = run(capsys, "eval", str(model_file), "--data", "mnist", "--split", "train",
                         "--limit", "20", "--k", "3", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["split"] == "train"
    assert not (run_dir / "eval").exists()  # only a run folder gets its evaluations saved


def test_cli_same_seed_same_numbers(run_dir, capsys):
    def numbers(seed: str) -> dict:
        code, out, err = run(
            capsys, "eval", str(run_dir), "--k", "7", "--limit", "40", "--seed", seed, "--json"
        )
        assert code == 0, err
        result = json.loads(out)
        del result["seconds"], result["images_per_s"]
        return result

    first, again, other = numbers("3"), numbers("3"), numbers("4")
    assert first == again
    assert other["neg_log_px"] != first["neg_log_px"]
    assert other["kl"] == first["kl"]  # the data and their preparation do not depend on --seed


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--k", "0"], 2, "--k must be at least 1"),
        (["--k", "-3"], 2, "--k must be at least 1"),
        (["--batch-size", "0"], 2, "--batch-size must be at least 1"),
        (["--limit", "0"], 2, "--limit must be at least 1"),
        (["--split", "validation"], 2, "unknown 'validation'"),
        (["--data", "nosuchdata"], 2, "nosuchdata"),
        (["--data-opt", "oops"], 2, "KEY=VALUE"),
        (["--device", "tpu"], 2, "unknown device 'tpu'"),
        (["--k", "many"], 2, "Invalid value for '--k'"),
    ],
)
def test_cli_bad_options(run_dir, capsys, args, code, message):
    got, out, err = run(capsys, "eval", str(run_dir), *args)
    assert got == code
    assert message in one_error_line(err)
    assert out == "" and not (run_dir / "eval").exists()


def test_cli_bad_models(tmp_path, capsys):
    code, out, err = run(capsys, "eval", str(tmp_path / "missing.safetensors"))
    assert code == 1 and "no model at" in one_error_line(err)
    text = tmp_path / "notes.safetensors"
    text.write_text("not a model at all")
    code, out, err = run(capsys, "eval", str(text))
    assert code == 1 and "is not a safetensors model file" in one_error_line(err)
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()
    code, out, err = run(capsys, "eval", str(empty_run))
    assert code == 1 and "no model at" in one_error_line(err)
    assert not (empty_run / "eval").exists()


def test_cli_dataset_of_another_image_shape(run_dir, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    code, out, err = run(capsys, "eval", str(run_dir), "--data", f"folder:{folder}", "--data-opt", "size=16",
                         "--data-opt", "test_fraction=0.5", "--k", "2")  # fmt: skip
    assert code == 1
    assert "has images of shape (1, 16, 16)" in one_error_line(err) and "(1, 28, 28)" in err
    assert not (run_dir / "eval.json").exists()
    # The same folder at the model's size evaluates.
    code, out, err = run(capsys, "eval", str(run_dir), "--data", f"folder:{folder}", "--data-opt",
                         "test_fraction=0.5", "--k", "2", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["data"] == "folder"


def test_memory_stays_bounded_for_a_huge_k(run_dir):
    """100,000 samples of each of 2 images in a real subprocess: decoded all at once their logits
    alone would take 627 MB (and the log-likelihood's temporaries as much again); in chunks the
    peak grows by about one chunk."""
    script = (
        "import resource, sys; from vaecli.cli import main; "
        "code = main(sys.argv[1:]); "
        "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
        "sys.exit(code)"
    )

    def peak_mb(k: int) -> float:
        argv = [sys.executable, "-c", script, "eval", str(run_dir), "--limit", "2", "--k", str(k), "--json"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["k"] == k
        return int(done.stderr.split("maxrss_kb")[1].split()[0]) / 1024

    small, huge = peak_mb(10), peak_mb(100_000)
    print(f"peak memory: {small:.0f} MB at k = 10, {huge:.0f} MB at k = 100,000")
    assert huge - small < 500, (small, huge)


def test_a_model_finds_its_data_from_any_folder_without_the_variable(
    mnist_root, tmp_path, monkeypatch, no_network_mnist, capsys
):
    """Trained with VAECLI_DATA_DIR=../shared/data, then used from another folder with no variable
    set (and an empty cache, no network): eval and the pictures read the folder the model recorded."""
    from vaecli.datasets import DATA_DIR_ENV
    from vaecli.modelfile import read_header

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir(), (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(mnist_root, target_is_directory=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(work)
    monkeypatch.setenv(DATA_DIR_ENV, "../shared/data")
    tiny = ["--epochs", "1", "--limit-train", "500", "--limit-test", "100", "--hidden", "16"]
    assert main(["train", *tiny, "--latent-dim", "2", "-q", "--device", "cpu", "--out", "runs/a"]) == 0
    run = work / "runs" / "a"
    header = read_header(run / "model.safetensors")
    assert header["data"]["dir"] == str(tmp_path / "shared" / "data")
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "2", "--limit", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 20
    assert main(["reconstruct", str(run), "--n", "2", "--out", "r.png"]) == 0
    # --data-dir and the variable still come first: a folder without MNIST is refused.
    empty = tmp_path / "no-data"
    empty.mkdir()
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "2", "--limit", "20", "--data-dir", str(empty)]) == 1
    assert "MNIST is not in" in capsys.readouterr().err


def test_each_evaluation_setting_has_its_own_file(run_dir, capsys):
    """Split, k, limit, seed and another dataset (or other options) name the file; the model's own
    dataset asked for by name is the same setting as by default."""
    settings = [
        (["--k", "2", "--limit", "10"], "test-k2-first10.json"),
        (["--k", "2", "--limit", "10", "--data", "mnist"], "test-k2-first10.json"),
        (["--k", "2", "--limit", "10", "--seed", "3"], "test-k2-first10-seed3.json"),
        (["--k", "2", "--limit", "10", "--split", "train"], "train-k2-first10.json"),
        (["--k", "3", "--limit", "10", "--data-opt", "download=false"], None),
    ]
    for args, name in settings:
        code, out, err = run(capsys, "eval", str(run_dir), *args, "--json")
        assert code == 0, err
        if name is not None:
            assert json.loads((run_dir / "eval" / name).read_text()) == json.loads(out)
    names = sorted(p.name for p in (run_dir / "eval").iterdir())
    assert len(names) == 4
    other = [n for n in names if n.startswith("test-k3")]
    assert len(other) == 1 and re.fullmatch(r"test-k3-first10-data_[0-9a-f]{8}\.json", other[0])
