"""Priors against torch.distributions: densities, the Monte-Carlo KL on the model's own draws,
vae eval's importance-sampled estimate, draws and moments; and the old model files."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_cli import draw_pictures, one_error_line, run
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from vaecli.evaluation import evaluate
from vaecli.models import ModelSpec, build_model
from vaecli.priors import mixture
from vaecli.priors.mixture import GaussianMixture
from vaecli.priors.normal import StandardNormal

DATA = Path(__file__).parent / "data"


def tiny_model(prior: str = "mog", k: int = 5, latent_dim: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    spec = ModelSpec(
        input_shape=(1, 6, 6), latent_dim=latent_dim, architecture_options={"hidden": [16]},
        prior=prior, prior_options={"k": k} if prior != "normal" else {},
    )  # fmt: skip
    model = build_model(spec).double()
    if prior == "mog":  # components of their own, not the start's N(0, I)-like spread
        with torch.no_grad():
            model.prior.means.mul_(2.0)
            model.prior.logvars.copy_(torch.randn_like(model.prior.logvars))
            model.prior.logits.copy_(torch.randn_like(model.prior.logits))
    return model


def batch(n: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 6, 6), 0.4, dtype=torch.float64), generator=g)


def reference_prior(model) -> MixtureSameFamily:
    """The model's prior as torch.distributions builds it from the prior's parameters (for vamp:
    the encoder's posteriors of the pseudo-inputs)."""
    if model.spec.prior == "vamp":
        mu, logvar = model.encode(model.prior.pseudo_inputs)
        logits = torch.zeros(mu.shape[0], dtype=mu.dtype)
    else:
        mu, logvar, logits = model.prior.means, model.prior.logvars, model.prior.logits
    return MixtureSameFamily(Categorical(logits=logits), Independent(Normal(mu, torch.exp(0.5 * logvar)), 1))


def test_normal_prior_density_and_kl_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    prior = StandardNormal(6, (1, 2, 2))
    z = torch.randn(5, 7, 6, generator=g, dtype=torch.float64) * 3
    torch.testing.assert_close(prior.log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    mu, logvar = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g).double()
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(prior.kl(mu, logvar), expected)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_mixture_densities_match_mixture_same_family(prior):
    model = tiny_model(prior, k=7)
    z = torch.randn(5, 9, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    with torch.no_grad():
        torch.testing.assert_close(model.prior.log_prob(z), reference_prior(model).log_prob(z))


def test_the_mixture_density_in_small_pieces_is_the_same(monkeypatch):
    model = tiny_model("mog", k=7)
    z = torch.randn(40, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        whole = model.prior.log_prob(z)
        monkeypatch.setattr(mixture, "PIECE_ELEMENTS", 7 * 4)  # 4 codes a piece: 10 pieces
        torch.testing.assert_close(model.prior.log_prob(z), whole, rtol=0, atol=1e-12)


def test_the_mixture_density_keeps_its_digits_for_narrow_components_in_float32():
    """The VampPrior's components are narrow (posterior variances of 1e-3 and below): the expanded
    square must not lose the density's digits to cancellation when the codes are float32."""
    g = torch.Generator().manual_seed(6)
    mu = torch.randn(50, 32, generator=g) * 2
    logvar = torch.full((50, 32), -7.0) + torch.rand(50, 32, generator=g)
    z = mu[torch.arange(200) % 50] + 0.03 * torch.randn(200, 32, generator=g)  # near a component each
    log_weights = torch.log_softmax(torch.randn(50, generator=g), 0)
    found = mixture.mixture_log_prob(z, log_weights, mu, logvar)
    assert found.dtype == torch.float32
    components = Independent(Normal(mu.double(), torch.exp(0.5 * logvar.double())), 1)
    reference = MixtureSameFamily(Categorical(logits=log_weights.double()), components).log_prob(z.double())
    torch.testing.assert_close(found.double(), reference, rtol=0, atol=2e-4)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_the_kl_is_log_q_minus_log_p_on_the_decoded_draws(prior):
    model, x = tiny_model(prior), batch()
    assert not model.kl_exact
    eps = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    terms = model(x, eps, weights=True)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        q = Independent(Normal(mu.unsqueeze(1), torch.exp(0.5 * logvar).unsqueeze(1)), 1)
        z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)
        log_pz, log_qz = reference_prior(model).log_prob(z), q.log_prob(z)
        logits = model.decode(z.reshape(24, 3))[:, 0].reshape(4, 6, 1, 6, 6)
        log_px_z = TorchBernoulli(logits=logits).log_prob(x.unsqueeze(1).expand_as(logits)).flatten(2).sum(2)
    assert terms.kl.shape == (4, 1)
    torch.testing.assert_close(terms.kl[:, 0], (log_qz - log_pz).mean(1))
    torch.testing.assert_close(terms.reconstruction, log_px_z)
    torch.testing.assert_close(terms.log_weight, log_px_z + log_pz - log_qz)
    # Gradients reach the prior's own parameters (for vamp: the pseudo-inputs) through the KL.
    (grad,) = torch.autograd.grad(terms.kl.sum(), next(model.prior.parameters()))
    assert grad.abs().max() > 0


def reference_log_weights(model, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) of the draws z = mu + sigma eps (B, k, D), by
    torch.distributions."""
    b, k, d = eps.shape
    with torch.no_grad():
        mu, logvar = model.encode(x)
        q = Independent(Normal(mu.unsqueeze(1), torch.exp(0.5 * logvar).unsqueeze(1)), 1)
        z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)
        logits = model.decode(z.reshape(b * k, d))[:, 0].reshape(b, k, *x.shape[1:])
        log_px_z = TorchBernoulli(logits=logits).log_prob(x.unsqueeze(1).expand_as(logits)).flatten(2).sum(2)
        return log_px_z + reference_prior(model).log_prob(z) - q.log_prob(z)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_the_importance_sampled_estimate_uses_the_priors_density(prior):
    model, x, k, seed = tiny_model(prior), batch(n=6), 64, 3
    report = evaluate(model, x, k=k, seed=seed, batch_size=6 * k)  # one chunk: all draws at once
    eps = torch.randn((6, k, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    log_w = reference_log_weights(model, x, eps)
    torch.testing.assert_close(report.per_image.log_px, torch.logsumexp(log_w, 1) - math.log(k))
    torch.testing.assert_close(report.per_image.elbo, log_w.mean(1))  # the Monte-Carlo ELBO
    assert report.kl_per_dim is None and set(report.kl_per_group) == {"z"}
    assert report.kl_per_group["z"] == pytest.approx(report.kl)


def test_an_evaluation_in_several_chunks_of_draws_is_the_same_bound():
    """k larger than a chunk: the draws come a chunk at a time; the KL is averaged over all k."""
    model, x = tiny_model("vamp"), batch(n=2)
    whole = evaluate(model, x, k=300, seed=5, batch_size=600)
    parts = evaluate(model, x, k=300, seed=5, batch_size=100)  # one image, 100 draws at a time
    # (other chunks draw other noise: the estimates agree within Monte-Carlo error only)
    assert parts.neg_log_px == pytest.approx(whole.neg_log_px, abs=0.5)
    assert parts.kl == pytest.approx(whole.kl, abs=0.5)


def test_an_evaluation_encodes_the_pseudo_inputs_once_and_every_chunk_scores_with_them():
    """The VampPrior's components are the encoder run on its K pseudo-inputs: vae eval runs it
    once, not once for each of its chunks, and every chunk's density is still the prior's."""
    model, x, k = tiny_model("vamp", k=7), batch(n=3), 40
    rows: list[int] = []
    model.encoder.register_forward_hook(lambda module, inputs, output: rows.append(inputs[0].shape[0]))
    report = evaluate(model, x, k=k, seed=2, batch_size=10)  # one image and 10 draws a chunk: 12 chunks
    assert rows.count(7) == 1 and model.prior.kept is None  # (after it, each call encodes them anew)
    with model.evaluating():
        with model.evaluating():  # (an inner block keeps the outer one's components)
            pass
        assert model.prior.kept is not None
    assert rows.count(7) == 2
    generator = torch.Generator().manual_seed(2)  # the draws, chunk by chunk as evaluate made them
    eps = torch.stack([torch.cat([torch.randn((1, 10, 3), generator=generator, dtype=torch.float64)
                                  for _ in range(k // 10)], 1)[0] for _ in range(3)])  # fmt: skip
    log_w = reference_log_weights(model, x, eps)
    torch.testing.assert_close(report.per_image.log_px, torch.logsumexp(log_w, 1) - math.log(k))


def test_mixture_moments_and_draws_match_the_mixture():
    torch.manual_seed(0)
    prior = GaussianMixture(2, (1, 1, 1), k=3)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-6.0, 0.0], [0.0, 4.0], [6.0, -2.0]]))
        prior.logvars.copy_(torch.tensor([[0.0, -1.0], [-2.0, 0.5], [0.3, 0.0]]))
        prior.logits.copy_(torch.tensor([0.0, 1.0, -0.5]))
    reference = MixtureSameFamily(
        Categorical(logits=prior.logits.detach()),
        Independent(Normal(prior.means.detach(), torch.exp(0.5 * prior.logvars.detach())), 1),
    )
    mean, std = prior.moments()
    torch.testing.assert_close(mean, reference.mean)
    torch.testing.assert_close(std, reference.variance.sqrt())
    draws = prior.sample(200_000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws.mean(0), reference.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), reference.variance.sqrt(), atol=0.05, rtol=0)
    # Each component's share of the draws is its weight (the components lie far apart in z0).
    shares = torch.stack([(draws[:, 0] < -3).float().mean(), (draws[:, 0].abs() <= 3).float().mean()])
    torch.testing.assert_close(shares, reference.mixture_distribution.probs[:2], atol=0.01, rtol=0)
    # A temperature scales each component's spread, not the distances between them.
    cold = prior.sample(100_000, torch.Generator().manual_seed(2), temperature=0.5)
    first = cold[cold[:, 0] < -3]
    assert first[:, 0].mean() == pytest.approx(-6.0, abs=0.02)
    assert first[:, 0].std() == pytest.approx(0.5, abs=0.02)
    same_seed = [prior.sample(5, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same_seed)


def test_the_vamp_prior_starts_from_training_images():
    torch.manual_seed(0)
    model = build_model(ModelSpec(input_shape=(1, 6, 6), latent_dim=3, prior="vamp", prior_options={"k": 4},
                                  architecture_options={"hidden": [8]}))  # fmt: skip
    # Black-and-white images: binarising them (the Bernoulli likelihood's preparation) keeps them.
    images = (torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.5).to(torch.uint8) * 255
    model.start_from_data(images)
    prepared = model.likelihood.prepare(images, torch.Generator().manual_seed(0))
    for u in model.prior.pseudo_inputs.detach():
        assert any(torch.equal(u, p) for p in prepared)
    assert len({float(u.sum()) for u in model.prior.pseudo_inputs.detach()}) > 1


#: Model files written by earlier vaecli versions, and the vae eval numbers those versions gave.
OLD_FILES = [("format3-mlp", 3, "normal"), ("format4-mog", 4, "mog")]


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize(("stem", "version", "prior"), OLD_FILES)
def test_an_old_model_file_gives_the_numbers_its_vaecli_gave(stem, version, prior, case, mnist_root):
    """tests/data/format3-mlp.safetensors (commit 1945697, before priors: loaded now, it has the
    N(0, I) prior) and format4-mog.safetensors (commit c00a41f, before models), with the eval
    numbers those commits gave: today's code gives them again (to 1e-7 relative and 1e-5 nats: the
    same code gives them to the last digit on one machine, but another CPU's float32 kernels round
    differently)."""
    from vaecli.config import EvalConfig
    from vaecli.evaluation import evaluate_model
    from vaecli.modelfile import load_model

    path = DATA / f"{stem}.safetensors"
    recorded = json.loads((DATA / f"{stem}-eval.json").read_text())["evals"][case]
    model, header = load_model(path)
    assert header["format_version"] == version and model.spec.prior == prior and model.spec.model == "vae"
    args = dict(zip(recorded["args"][::2], recorded["args"][1::2], strict=True))
    config = EvalConfig(
        model=str(path), data_dir=str(mnist_root), device="cpu",
        k=int(args["--k"]), limit=int(args["--limit"]), batch_size=int(args["--batch-size"]),
    )  # fmt: skip
    report = evaluate_model(config).to_dict()
    for key in ("neg_elbo", "reconstruction", "kl", "neg_log_px", "gap"):
        assert report[key] == pytest.approx(recorded[key], rel=1e-7, abs=1e-5), key
    assert report["active_units"] == recorded["active_units"]
    if recorded["kl_per_dim"] is None:
        assert report["kl_per_dim"] is None
    else:
        assert report["kl_per_dim"] == pytest.approx(recorded["kl_per_dim"], rel=1e-6, abs=1e-9)
    assert report["kl_per_group"]["z"] == pytest.approx(recorded["kl"], rel=1e-7)


# --- through every command -------------------------------------------------------------------

TINY = ["--epochs", "1", "--limit-train", "1000", "--limit-test", "200", "--hidden", "32",
        "--latent-dim", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def vamp_run(mnist_root, tmp_path_factory):
    from vaecli.train import TrainConfig, train

    out = tmp_path_factory.mktemp("priors") / "vamp"
    config = TrainConfig(
        data_dir=str(mnist_root), epochs=2, limit_train=2000, limit_test=300, latent_dim=4,
        arch_options={"hidden": "64"}, prior="vamp", prior_options={"k": "20"}, device="cpu", out=str(out),
    )  # fmt: skip
    return train(config).run_dir


def test_a_vamp_run_records_its_prior_and_trains_it(vamp_run):
    from safetensors.torch import load_file

    from vaecli.config import load_config_file
    from vaecli.modelfile import read_header

    header = read_header(vamp_run / "model.safetensors")
    assert header["format_version"] == 5
    assert header["model"]["prior"] == "vamp" and header["model"]["prior_options"] == {"k": 20}
    assert header["parts"]["prior"]["distribution"] == "vaecli"
    assert load_file(str(vamp_run / "model.safetensors"))["prior.pseudo_inputs"].shape == (20, 1, 28, 28)
    config = load_config_file(vamp_run / "config.yaml")
    assert config.prior == "vamp" and config.prior_options == {"k": 20}
    rows = [json.loads(line) for line in (vamp_run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]
    assert rows[-1]["test_kl"] > 0  # the Monte-Carlo KL of a trained model: positive on average


def test_every_command_works_with_a_vamp_prior(vamp_run, in_tmp, capsys):
    tmp_path = in_tmp
    run_dir = str(vamp_run)
    code, out, err = run(capsys, "eval", run_dir, "--k", "50", "--limit", "100", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kl_per_dim"] is None and report["kl_per_group"]["z"] == pytest.approx(report["kl"])
    assert report["neg_log_px"] <= report["neg_elbo"] + 1.0
    code, out, err = run(capsys, "eval", run_dir, "--k", "10", "--limit", "20")
    assert code == 0 and "KL nats" in out, err
    draw_pictures(
        capsys, tmp_path, run_dir, ["sample", run_dir, "--n", "8", "--out", "s2.png", "--temperature", "0.7"]
    )
    code, out, err = run(capsys, "traverse", run_dir, "--out", "t2.png", "--steps", "3", "--count", "2")
    assert code == 0 and "Cov" in err + out  # rows chosen by activity: a mixture has no KL per dimension


def test_a_traversal_sweeps_around_the_priors_mean_in_its_standard_deviations():
    from vaecli.pictures import traversal_codes

    centre, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 1.0])
    codes = traversal_codes(3, [1], 2.0, 3, centre, scale)
    expected = torch.tensor([[1.0, -3.0, 0.5], [1.0, -2.0, 0.5], [1.0, -1.0, 0.5]])
    torch.testing.assert_close(codes, expected)
    torch.testing.assert_close(traversal_codes(3, [0], 1.0, 2), torch.tensor([[-1.0, 0, 0], [1.0, 0, 0]]))


def test_samples_come_from_the_vamp_prior(vamp_run):
    from vaecli.modelfile import load_model
    from vaecli.sampling import sample

    model, _ = load_model(vamp_run)
    drawn = sample(vamp_run, n=4000, seed=3, device="cpu").z
    mean, std = model.prior.moments()
    torch.testing.assert_close(drawn.mean(0), mean, atol=0.1, rtol=0)
    torch.testing.assert_close(drawn.std(0), std, atol=0.1, rtol=0.05)
    assert torch.equal(sample(vamp_run, n=4000, seed=3, device="cpu").z, drawn)  # a seed, the same codes


# --- vae prior: the components as pictures ----------------------------------------------------------


def test_vae_prior_shows_each_pseudo_input_beside_its_decoded_mean(vamp_run, tmp_path, capsys):
    from safetensors.torch import load_file
    from test_pictures import cell, close, expected_pixels, grid_size, pixels

    from vaecli.modelfile import load_model

    model, _ = load_model(vamp_run, "cpu")
    pseudo = load_file(str(vamp_run / "model.safetensors"))["prior.pseudo_inputs"]
    assert pseudo.min() < 0 or pseudo.max() > 1  # trained: they have left [0, 1], which the picture clips
    out = tmp_path / "prior.png"
    code, stdout, err = run(capsys, "prior", str(vamp_run), "--n", "5", "--out", str(out), "--device", "cpu")
    assert code == 0 and stdout == "", err
    assert "the first 5 of the 20 components of the vamp prior" in one_error_line(err)
    assert Image.open(out).size == grid_size(2, 6)  # 5 pairs, 3 to a row
    grid = pixels(out)
    with torch.no_grad():
        decoded = expected_pixels(model, model.encode(pseudo[:5])[0])
    for i in range(5):
        row, column = divmod(i, 3)
        shown = (pseudo[i, 0].clamp(0, 1) * 255).round().numpy().astype(int)
        assert close(cell(grid, row, 2 * column), shown)
        assert close(cell(grid, row, 2 * column + 1), decoded[i])
    code, _, err = run(capsys, "prior", str(vamp_run), "--n", "50", "--out", str(out), "--device", "cpu")
    assert code == 1 and "already exists; pass --force" in one_error_line(err)
    code, _, err = run(capsys, "prior", str(vamp_run), "--n", "50", "--out", str(out), "--force")
    assert code == 0 and "the first 20 of the 20 components" in err, err
    assert Image.open(out).size == grid_size(4, 10)  # all 20, 5 pairs to a row


def test_vae_prior_shows_a_mixtures_decoded_means_heaviest_first(mnist_root, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file
    from test_pictures import cell, close, expected_pixels, grid_size, pixels

    from vaecli.modelfile import load_model
    from vaecli.train import TrainConfig, train

    config = TrainConfig(
        data_dir=str(mnist_root), epochs=1, limit_train=1000, limit_test=100, latent_dim=4,
        arch_options={"hidden": "32"}, prior="mog", prior_options={"k": "4"}, device="cpu",
        out=str(tmp_path / "mog"),
    )  # fmt: skip
    file = train(config).run_dir / "model.safetensors"
    with safe_open(str(file), "pt") as f:  # weights of our choosing: 1 then 3 then 0 then 2
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["prior.logits"] = torch.tensor([0.1, 2.0, -1.0, 0.5])
    save_file(tensors, str(file), metadata)
    model, _ = load_model(file, "cpu")
    out = tmp_path / "mog.png"
    code, _, err = run(capsys, "prior", str(file), "--n", "3", "--out", str(out))
    assert code == 0, err
    assert "the heaviest 3 of the 4 components of the mog prior: the decoded mean of each" in err
    assert Image.open(out).size == grid_size(2, 2)
    decoded, grid = expected_pixels(model, tensors["prior.means"][[1, 3, 0]]), pixels(out)
    for i in range(3):
        assert close(cell(grid, *divmod(i, 2)), decoded[i])


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_a_run_with_a_learned_prior_resumes_to_the_same_weights(prior, mnist_root, tmp_path):
    from test_objectives import same_weights
    from test_runs import SignalAt

    from vaecli.train import TrainConfig, TrainingInterrupted, train

    def config(out):
        return TrainConfig(
            data_dir=str(mnist_root), epochs=2, limit_train=1200, limit_test=200, latent_dim=4,
            arch_options={"hidden": "32"}, prior=prior, prior_options={"k": "6"}, device="cpu", out=str(out),
        )  # fmt: skip

    train(config(tmp_path / "straight"))
    with pytest.raises(TrainingInterrupted):
        train(config(tmp_path / "run"), SignalAt(2, 2))
    train(config(tmp_path / "run"), resume=True)
    assert same_weights(tmp_path / "straight", tmp_path / "run")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--prior", "vampp"], "unknown prior 'vampp'"),
        (["--prior", "vamp", "--prior-opt", "k=0"], "option k must be a whole number from 1"),
        (["--prior", "mog", "--prior-opt", "k=many"], "k"),
        (["--prior", "mog", "--prior-opt", "width=3"], "width"),
        (["--prior-opt", "k"], "--prior-opt"),
    ],
)
def test_bad_prior_flags_are_one_line_and_write_nothing(argv, expected, capsys, tmp_path, monkeypatch,
                                                         mnist_root):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAECLI_DATA_DIR", str(mnist_root))
    code, out, err = run(capsys, "train", *TINY, *argv)
    assert code == 2 and out == ""
    assert expected in one_error_line(err)
    assert not (tmp_path / "runs").exists()


def test_a_config_file_with_another_prior_takes_that_priors_options(vamp_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", "--config", str(vamp_run / "config.yaml"), "--prior", "normal",
                         "--out", "n", "--epochs", "1")  # fmt: skip
    assert code == 0, err
    from vaecli.modelfile import read_header

    model = read_header(tmp_path / "n" / "model.safetensors")["model"]
    assert model["prior"] == "normal" and model["prior_options"] == {}


@pytest.mark.slow
def test_a_vamp_run_compiled_matches_eager(mnist_root, tmp_path):
    from test_distributed import small

    from vaecli.train import train

    prior = {"prior": "vamp", "prior_options": {"k": "10"}, "epochs": 1}
    eager = train(small(mnist_root, tmp_path / "eager", **prior)).metrics
    compiled = train(small(mnist_root, tmp_path / "compiled", compile=True, **prior)).metrics
    for key in ("train_neg_elbo", "test_neg_elbo", "test_kl"):
        assert compiled[0][key] == pytest.approx(eager[0][key], rel=1e-3)


@pytest.mark.slow
def test_a_vamp_run_in_two_torchrun_processes_equals_one_process(mnist_root, tmp_path):
    import sys

    from test_distributed import TORCHRUN, TRAIN, assert_close_weights
    from test_distributed import run as run_process

    vamp = ["--prior", "vamp", "--prior-opt", "k=8"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    done = run_process([sys.executable, "-m", "vaecli", *TRAIN, *vamp, "--out", str(single)], mnist_root)
    assert done.returncode == 0, done.stderr
    done = run_process([*TORCHRUN, "-m", "vaecli", *TRAIN, *vamp, "--out", str(ddp)], mnist_root)
    assert done.returncode == 0, done.stderr
    assert_close_weights(ddp, single)  # the pseudo-inputs included
