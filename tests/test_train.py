"""Real (short) trainings on MNIST: learning, the run folder, reproducibility."""

import json
import math

import pytest
import torch
import yaml
from conftest import marginals_neg_elbo
from safetensors.torch import load_file
from torch.distributions import Bernoulli as TorchBernoulli

from vaecli.datasets import mnist
from vaecli.evaluation import mean_elbo
from vaecli.likelihoods import Bernoulli
from vaecli.modelfile import load_model
from vaecli.models import ModelSpec, build_model
from vaecli.train import TEST_PREPARE_SEED, TrainConfig, prepare_fixed, train

pytestmark = pytest.mark.slow


def test_training_beats_any_untrained_model(mnist_root, tmp_path):
    config = TrainConfig(
        data_dir=str(mnist_root),
        epochs=4,
        limit_train=25000,
        limit_test=2000,
        device="cpu",
        out=str(tmp_path / "r"),
    )
    result = train(config)
    test_x = prepare_fixed(Bernoulli(), mnist(mnist_root, "test").images[:2000], TEST_PREPARE_SEED)
    untrained = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model(ModelSpec(input_shape=(1, 28, 28), latent_dim=32))
        untrained.append(mean_elbo(model, test_x)["neg_elbo"])
    # An untrained decoder is near 784 ln 2 = 543 nats. The best model that ignores z altogether
    # (independent pixels with the training set's marginals) is the bar a decoder meets without
    # learning anything from the encoder: training must beat it by a wide margin.
    ignores_z = marginals_neg_elbo(mnist_root, 25000, 2000)
    assert min(untrained) > 500 and 190 < ignores_z < 220
    final = result.metrics[-1]["test_neg_elbo"]
    assert final < ignores_z - 40, (final, ignores_z)
    assert result.metrics[1]["test_neg_elbo"] < result.metrics[0]["test_neg_elbo"]
    # The trained model file scores the same on the same fixed test set.
    loaded, header = load_model(result.run_dir)
    assert mean_elbo(loaded, test_x)["neg_elbo"] == pytest.approx(final, rel=1e-6)
    assert header["metrics"]["test_neg_elbo"] == pytest.approx(final)


def test_training_starts_from_the_training_images_marginals(small_run, mnist_root):
    # The model's output offset holds each pixel's logit of the training images' rate of ones
    # (half a one and half a zero added), so a decoder that outputs zeros is the best model that
    # ignores z: its reconstruction term is the marginals' log-likelihood (torch.distributions).
    model, _ = load_model(small_run)
    train_images = mnist(mnist_root, "train").images[:6000].double() / 255
    rate = (train_images.sum(0) + 0.5) / (6000 + 1)
    torch.testing.assert_close(model.output_offset, torch.logit(rate).float().unsqueeze(0))
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    test_x = prepare_fixed(Bernoulli(), mnist(mnist_root, "test").images[:50], TEST_PREPARE_SEED)
    marginals = TorchBernoulli(probs=rate.float())
    with torch.no_grad():
        reconstruction = model.elbo(test_x).reconstruction
    torch.testing.assert_close(reconstruction, marginals.log_prob(test_x).flatten(1).sum(1))


def test_run_folder_contents(small_run):
    assert (small_run / "model.safetensors").is_file()
    config = yaml.safe_load((small_run / "config.yaml").read_text())
    assert config["epochs"] == 2 and config["limit_train"] == 6000 and config["out"] == str(small_run)
    rows = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["test_neg_elbo"] == pytest.approx(row["test_reconstruction"] + row["test_kl"])
        assert row["images_per_s"] > 0
    pngs = sorted(p.name for p in (small_run / "samples").iterdir())
    assert pngs == ["epoch-001.png", "epoch-002.png"]
    assert not list(small_run.glob(".*.tmp"))


def _weights(mnist_root, out, seed):
    config = TrainConfig(
        data_dir=str(mnist_root),
        epochs=1,
        limit_train=2000,
        limit_test=200,
        latent_dim=4,
        arch_options={"hidden": "64"},
        seed=seed,
        device="cpu",
        out=str(out),
    )
    train(config)
    return load_file(str(out / "model.safetensors"))


def test_same_seed_gives_the_same_weights(mnist_root, tmp_path):
    a = _weights(mnist_root, tmp_path / "a", seed=5)
    b = _weights(mnist_root, tmp_path / "b", seed=5)
    c = _weights(mnist_root, tmp_path / "c", seed=6)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _untrained_neg_elbo(spec, test_x):
    scores = []
    for seed in range(3):
        torch.manual_seed(seed)
        scores.append(mean_elbo(build_model(spec), test_x)["neg_elbo"])
    return min(scores)


def test_a_learned_sigma_starts_at_the_training_images_pooled_deviation(mnist_root, tmp_path):
    # sigma=learned is one parameter of the likelihood: a run starts it at the pooled standard
    # deviation of the dequantised training pixels about their means (computed here by hand),
    # not at 1. At lr 1e-9 one epoch of 2 steps leaves it there.
    config = TrainConfig(
        data_dir=str(mnist_root),
        likelihood="gaussian",
        likelihood_options={"sigma": "learned"},
        epochs=1,
        lr=1e-9,
        limit_train=200,
        batch_size=100,
        limit_test=50,
        device="cpu",
        out=str(tmp_path / "r"),
    )
    model, _ = load_model(train(config).run_dir)
    pixels = mnist(mnist_root, "train").images[:200].double()
    pooled = ((pixels - pixels.mean(0)).square().mean() + 1 / 12) / 256**2
    log_sigma = model.likelihood.log_sigma(model.output_offset.unsqueeze(0)).item()
    assert log_sigma == pytest.approx(0.5 * math.log(pooled.item()), abs=1e-6)


@pytest.mark.parametrize(
    ("likelihood", "options", "limit_train", "factor"),
    [("gaussian", {"sigma": "pixel"}, 10000, 0.8), ("categorical", {}, 3000, 0.35)],
)
def test_each_8bit_likelihood_learns_and_reports_bits_per_dim(
    mnist_root, tmp_path, likelihood, options, limit_train, factor
):
    config = TrainConfig(
        data_dir=str(mnist_root),
        likelihood=likelihood,
        likelihood_options=options,
        epochs=2,
        limit_train=limit_train,
        limit_test=500,
        device="cpu",
        out=str(tmp_path / "r"),
    )
    result = train(config)
    spec = ModelSpec(
        input_shape=(1, 28, 28), latent_dim=32, likelihood=likelihood, likelihood_options=options
    )
    test_x = prepare_fixed(
        build_model(spec).likelihood, mnist(mnist_root, "test").images[:500], TEST_PREPARE_SEED
    )
    untrained = _untrained_neg_elbo(spec, test_x)
    # Untrained, the density is spread over all 256 grey levels: about 784 ln 256 = 4347 nats.
    assert untrained > 4000
    final = result.metrics[-1]
    assert all(math.isfinite(m["test_neg_elbo"]) for m in result.metrics)
    assert final["test_neg_elbo"] < factor * untrained, (final["test_neg_elbo"], untrained)
    assert final["test_bits_per_dim"] == pytest.approx(final["test_neg_elbo"] / (784 * math.log(2)))
    assert load_model_header(result.run_dir)["model"]["likelihood_options"] == options


def load_model_header(run_dir):
    from vaecli.modelfile import model_path, read_header

    return read_header(model_path(run_dir))
