"""Training objectives: each loss against torch.distributions and closed forms, the DReG
gradient against its defining formula and against the IWAE gradient it must equal in
expectation, and real trainings that report honest numbers whatever the objective."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal, kl_divergence

from vaecli.cli import main
from vaecli.config import TrainConfig
from vaecli.errors import UsageError
from vaecli.modelfile import read_header
from vaecli.models import ModelSpec, Terms, build_model
from vaecli.objectives import ElboObjective, IwaeObjective, Progress, build_objective
from vaecli.train import train
from vaecli.training.compiling import DREG_COMPILES

START = Progress(0.0, 10)


def tiny_model(latent_dim: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    spec = ModelSpec(input_shape=(1, 6, 6), latent_dim=latent_dim, architecture_options={"hidden": [16]})
    return build_model(spec).double()


def batch(n: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 6, 6), 0.4, dtype=torch.float64), generator=g)


def reference_terms(model, x, eps):
    """log p(x|z_s), log p(z_s), log q(z_s|x) (B, S) and KL (B,), from torch.distributions."""
    mu, logvar = model.encode(x)
    q = Normal(mu.unsqueeze(1), torch.exp(0.5 * logvar).unsqueeze(1))
    z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)
    b, s, d = eps.shape
    logits = model.decode(z.reshape(b * s, d))[:, 0].reshape(b, s, *x.shape[1:])
    log_px_z = TorchBernoulli(logits=logits).log_prob(x.unsqueeze(1).expand_as(logits)).flatten(2).sum(2)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = q.log_prob(z).sum(-1)
    kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    return log_px_z, log_pz, log_qz, kl


# --- the losses -------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.25, 4.0])
def test_elbo_loss_is_reconstruction_minus_beta_kl(beta):
    model, x = tiny_model(), batch()
    eps = torch.randn(4, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    log_px_z, _, _, kl = reference_terms(model, x, eps)
    loss = ElboObjective(beta=beta).loss(model(x, eps), START)
    torch.testing.assert_close(loss, -(log_px_z[:, 0] - beta * kl))
    terms = model(x, eps).elbo()  # the true ELBO, whatever beta is
    torch.testing.assert_close(terms.elbo, log_px_z[:, 0] - kl)


def test_kl_warmup_rises_linearly_per_step_from_beta_start_to_beta():
    objective = ElboObjective(beta=2.0, warmup=1.5)
    assert objective.beta_start == 0.0  # a warm-up starts from 0 unless told
    for done, expected in [(0.0, 0.0), (0.75, 1.0), (1.2, 1.6), (1.5, 2.0), (7.0, 2.0)]:
        assert objective.beta_at(Progress(done, 10)) == pytest.approx(expected)
    assert ElboObjective(beta=3.0, beta_start=1.0, warmup=2).beta_at(Progress(1.0, 10)) == pytest.approx(2.0)
    assert ElboObjective(beta=3.0).beta_at(Progress(0.0, 10)) == 3.0  # no warm-up: beta throughout


def test_free_bits_clamps_each_dimensions_batch_mean_kl():
    model, x = tiny_model(latent_dim=4), batch(n=6)
    eps = torch.randn(6, 1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    terms = model(x, eps)
    mu, logvar = model.encode(x)
    kl_d = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).mean(0)  # (4,)
    lam = float(kl_d.detach().median())  # some dimensions below lambda, some above
    loss = ElboObjective(free_bits=lam, beta=2.0).loss(terms, START)
    expected = -terms.reconstruction[:, 0] + 2.0 * torch.clamp(kl_d, min=lam).sum()
    torch.testing.assert_close(loss, expected)
    # Dimensions held at lambda get no gradient from the KL term: only those above it are pushed.
    kl_only = Terms(terms.reconstruction.detach(), model.prior.kl(mu, logvar))
    (grad,) = torch.autograd.grad(ElboObjective(free_bits=lam).loss(kl_only, START).mean(), mu)
    below = kl_d < lam
    assert below.any() and (~below).any()
    assert grad[:, below].abs().max() == 0 and grad[:, ~below].abs().max() > 0


@pytest.mark.parametrize("k", [2, 5])
def test_iwae_loss_is_the_k_sample_bound(k):
    model, x = tiny_model(), batch()
    eps = torch.randn(4, k, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    log_px_z, log_pz, log_qz, kl = reference_terms(model, x, eps)
    objective = IwaeObjective(k=k)
    terms = model(x, eps, weights=objective.weights)
    expected = -(torch.logsumexp(log_px_z + log_pz - log_qz, dim=1) - math.log(k))
    torch.testing.assert_close(objective.loss(terms, START), expected)
    # The bound is at least the average of the k one-sample ELBOs (Jensen), image by image.
    assert (-expected >= (log_px_z + log_pz - log_qz).mean(1) - 1e-9).all()
    # The true ELBO reported alongside: the k draws' mean reconstruction minus the closed-form KL.
    torch.testing.assert_close(terms.elbo().elbo, log_px_z.mean(1) - kl)


def test_iwae_with_one_sample_is_the_elbo():
    model, x = tiny_model(), batch()
    eps = torch.randn(4, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    iwae = IwaeObjective(k=1)
    assert iwae.samples == 1 and not iwae.weights
    torch.testing.assert_close(iwae.loss(model(x, eps), START), ElboObjective().loss(model(x, eps), START))


def _grads(model, loss):
    model.zero_grad()
    loss.mean().backward()
    encoder = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    decoder = torch.cat([p.grad.flatten() for p in model.decoder.parameters()])
    return encoder, decoder


def test_dreg_gradient_matches_its_formula_and_the_iwae_decoder_gradient():
    k, model, x = 4, tiny_model(), batch(n=3)
    eps = torch.randn(3, k, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    dreg = IwaeObjective(k=k, dreg=True)
    value = dreg.loss(model(x, eps, weights=True, dreg=True), START)
    torch.testing.assert_close(value, IwaeObjective(k=k).loss(model(x, eps, weights=True), START))
    ours_enc, ours_dec = _grads(model, value)
    # The decoder's gradient is the plain IWAE gradient.
    _, iwae_dec = _grads(model, IwaeObjective(k=k).loss(model(x, eps, weights=True), START))
    torch.testing.assert_close(ours_dec, iwae_dec)
    # The encoder's, by Tucker et al.'s eq. 7: sum_s w_s^2 d log w_s / d z_s dz_s/dphi, with log q's
    # parameters held fixed, written out here with torch.distributions and no hooks.
    model.zero_grad()
    mu, logvar = model.encode(x)
    sigma = torch.exp(0.5 * logvar)
    z = mu.unsqueeze(1) + eps * sigma.unsqueeze(1)
    logits = model.decode(z.reshape(3 * k, 3))[:, 0].reshape(3, k, 1, 6, 6)
    log_w = (
        TorchBernoulli(logits=logits).log_prob(x.unsqueeze(1).expand_as(logits)).flatten(2).sum(2)
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(mu.detach().unsqueeze(1), sigma.detach().unsqueeze(1)).log_prob(z).sum(-1)
    )
    w = torch.softmax(log_w.detach(), dim=1)
    (dlogw_dz,) = torch.autograd.grad(log_w.sum(), z, retain_graph=True)
    params = list(model.encoder.parameters())
    grads = torch.autograd.grad(z, params, grad_outputs=-(w.square().unsqueeze(-1) * dlogw_dz) / 3)
    torch.testing.assert_close(ours_enc, torch.cat([g.flatten() for g in grads]))


def test_dreg_encoder_gradient_is_unbiased_for_the_iwae_gradient():
    # Both estimate the gradient of the same bound: their means over many draws agree within
    # their Monte Carlo error, and DReG's spread is smaller (Tucker et al. 2018).
    k, draws, model, x = 8, 250, tiny_model(), batch(n=2)
    g = torch.Generator().manual_seed(7)
    plain, dreg = [], []
    for _ in range(draws):
        eps = torch.randn(2, k, 3, dtype=torch.float64, generator=g)
        plain.append(_grads(model, IwaeObjective(k=k).loss(model(x, eps, weights=True), START))[0])
        dreg.append(_grads(model, IwaeObjective(k=k, dreg=True).loss(model(x, eps, dreg=True), START))[0])
    plain_t, dreg_t = torch.stack(plain), torch.stack(dreg)
    difference = plain_t.mean(0) - dreg_t.mean(0)
    error = torch.sqrt((plain_t.var(0) + dreg_t.var(0)) / draws) + 1e-12
    assert (difference.abs() / error).mean() < 1.5  # |z| of a standard normal averages 0.8
    assert dreg_t.var(0).sum() < 0.5 * plain_t.var(0).sum()


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "elbo",
            {"beta": "-1"},
            "objective 'elbo' (vaecli 0.1.0): option beta must be a number of at least 0",
        ),
        ("elbo", {"beta": "nan"}, "option beta must be a number of at least 0"),
        ("elbo", {"warmup": "soon"}, "option warmup wants a number, got 'soon'"),
        ("elbo", {"free_bits": "-0.5"}, "option free_bits must be a number of at least 0"),
        ("elbo", {"k": "5"}, "objective 'elbo' (vaecli 0.1.0) has no option 'k'"),
        ("iwae", {"k": "0"}, "option k must be at least 1, got 0"),
        ("iwae", {"k": "2.5"}, "option k wants an integer"),
        ("iwae", {"dreg": "maybe"}, "option dreg wants true or false"),
        ("iwae", {"free_bits": "1"}, "objective 'iwae' (vaecli 0.1.0) has no option 'free_bits'"),
        ("nope", {}, "unknown objective 'nope' (available: "),
    ],
)
def test_bad_objective_options_are_one_usage_error(name, options, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_objective(name, options)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--beta", "-1"], "option beta must be a number of at least 0, got -1.0"),
        (["--kl-warmup", "-2"], "option warmup must be a number of at least 0"),
        (["--free-bits", "-1"], "option free_bits must be a number of at least 0"),
        (["--iw-samples", "0"], "option k must be at least 1, got 0"),
        (
            ["--iw-samples", "5", "--free-bits", "0.5"],
            "--free-bits: an option of the elbo objective, not of iwae",
        ),
        (["--iw-samples", "5", "--beta", "2"], "--beta: an option of the elbo objective, not of iwae"),
        (["--iw-samples", "5", "--objective", "elbo"], "--iw-samples trains the iwae objective"),
        (
            ["--objective", "iwae", "--objective-opt", "k"],
            "--objective-opt option 'k' is not of the form KEY=VALUE",
        ),
        (["--objective", "nope"], "unknown objective 'nope'"),
        (["--callback", "nope"], "unknown callback 'nope'"),
        (["--log", "nope"], "unknown callback 'nope'"),
        (
            ["--callback-opt", "tensorboard.every=5"],
            "no --callback tensorboard (or --log tensorboard) was given",
        ),
        (["--log", "tensorboard", "--callback-opt", "every=5"], "is not of the form NAME.KEY=VALUE"),
        (
            ["--log", "tensorboard", "--callback-opt", "tensorboard.every=0"],
            "option every must be at least 1",
        ),
        (["--log", "tensorboard", "--callback-opt", "tensorboard.colour=red"], "has no option 'colour'"),
    ],
)
def test_bad_objective_and_callback_flags_exit_2_with_one_line(tmp_path, capsys, flags, message):
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


# --- real trainings ---------------------------------------------------------------------------

SMALL = {"limit_train": 1500, "limit_test": 300, "latent_dim": 4, "arch_options": {"hidden": "32"},
         "epochs": 2, "batch_size": 100, "device": "cpu"}  # fmt: skip


def small(mnist_root: Path, out: Path, **overrides) -> TrainConfig:
    return TrainConfig(data_dir=str(mnist_root), out=str(out), **{**SMALL, **overrides})


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_beta_and_free_bits_report_the_true_elbo_beside_their_loss(mnist_root, tmp_path):
    plain = rows(train(small(mnist_root, tmp_path / "plain")).run_dir)
    assert all(r["train_loss"] == r["train_neg_elbo"] for r in plain)  # beta = 1: the loss is -ELBO
    beta = rows(train(small(mnist_root, tmp_path / "beta", objective_options={"beta": 4})).run_dir)
    for r in beta:  # loss = -recon + 4 KL = -ELBO + 3 KL, over the same steps
        assert r["train_loss"] == pytest.approx(r["train_neg_elbo"] + 3 * r["train_kl"], rel=1e-6)
        assert r["test_neg_elbo"] == pytest.approx(r["test_reconstruction"] + r["test_kl"])
    free = rows(train(small(mnist_root, tmp_path / "free", objective_options={"free_bits": 1.0})).run_dir)
    for r in free:  # sum_d max(lambda, KL_d) >= sum_d KL_d
        assert r["train_loss"] >= r["train_neg_elbo"] - 1e-9
    config = yaml.safe_load((tmp_path / "beta" / "config.yaml").read_text())
    assert config["objective"] == "elbo"
    assert config["objective_options"] == {"beta": 4.0, "beta_start": 4.0, "warmup": 0.0, "free_bits": 0.0}
    header = read_header(tmp_path / "beta" / "model.safetensors")
    assert header["training"]["objective_options"]["beta"] == 4.0
    assert header["parts"]["objective"] == {"name": "elbo", "distribution": "vaecli", "version": "0.1.0"}


@pytest.mark.slow
def test_iwae_trains_reports_its_test_bound_and_k1_is_the_elbo(mnist_root, tmp_path):
    iwae = rows(
        train(small(mnist_root, tmp_path / "iw", objective="iwae", objective_options={"k": 5})).run_dir
    )
    for r in iwae:
        # The 5-sample bound is tighter than the ELBO on the same test images.
        assert r["test_neg_iw_bound"] < r["test_neg_elbo"]
        assert r["train_loss"] < r["train_neg_elbo"]
    assert iwae[-1]["test_neg_elbo"] < iwae[0]["test_neg_elbo"]
    train(small(mnist_root, tmp_path / "k1", objective="iwae", objective_options={"k": 1}))
    train(small(mnist_root, tmp_path / "elbo"))
    assert same_weights(tmp_path / "k1", tmp_path / "elbo")


@pytest.mark.slow
def test_a_kl_warmup_resumes_to_the_weights_of_an_uninterrupted_run(mnist_root, tmp_path):
    from test_runs import SignalAt

    from vaecli.train import TrainingInterrupted

    options = {"beta": 2.0, "warmup": 1.5}
    train(small(mnist_root, tmp_path / "straight", epochs=3, objective_options=options))
    with pytest.raises(TrainingInterrupted):
        train(small(mnist_root, tmp_path / "run", epochs=3, objective_options=options), SignalAt(2, 4))
    train(small(mnist_root, tmp_path / "run", epochs=3, objective_options=options), resume=True)
    assert same_weights(tmp_path / "straight", tmp_path / "run")
    assert [r["train_loss"] for r in rows(tmp_path / "run")] == [
        r["train_loss"] for r in rows(tmp_path / "straight")
    ]
    # Epoch 1 ran at beta_t < 1 throughout (0 to 4/3 of the way to 2): its loss is below -ELBO.
    first = rows(tmp_path / "run")[0]
    assert first["train_loss"] < first["train_neg_elbo"]


@pytest.mark.slow
def test_dreg_gradients_are_the_same_under_torch_compile():
    # The DReG scaling is a gradient hook inside the forward pass: torch.compile must keep it.
    if not DREG_COMPILES:
        pytest.skip(f"torch {torch.__version__} cannot compile DReG (vae train --compile says so)")
    model, x = tiny_model(), batch()
    model = model.float()
    eps = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(8))
    objective = IwaeObjective(k=5, dreg=True)

    def gradients(net):
        model.zero_grad()
        objective.loss(net(x.float(), eps, weights=True, dreg=True), START).mean().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    eager = gradients(model)
    torch._dynamo.reset()
    torch.testing.assert_close(gradients(torch.compile(model)), eager, rtol=1e-4, atol=1e-5)
