"""The plugin's own tests: run with `pytest plugins/vaecli-shapes` once it is installed."""

import torch
from torch.distributions import AffineTransform, SigmoidTransform, TransformedDistribution, Uniform
from vaecli_shapes.logistic import DiscretisedLogistic
from vaecli_shapes.resconv import resconv
from vaecli_shapes.shapes import shapes


def _reference_log_probs(mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log P(k) for k = 0..255 from torch.distributions' logistic CDF, in float64."""
    logistic = TransformedDistribution(
        Uniform(torch.zeros_like(mu), torch.ones_like(mu)),
        [SigmoidTransform().inv, AffineTransform(mu, scale)],
    )
    edges = (torch.arange(257, dtype=torch.float64) - 0.5) / 255
    cdf = torch.stack([logistic.cdf(e.expand_as(mu).clamp(-50, 50)) for e in edges])
    cdf[0], cdf[-1] = 0.0, 1.0
    return torch.log(cdf[1:] - cdf[:-1])  # (256, *mu.shape)


def test_logistic_against_torch_distributions_and_normalised():
    lik = DiscretisedLogistic().double()
    mu = torch.tensor([0.0, 0.3, 0.5, 0.97, 1.2], dtype=torch.float64)
    raw = torch.tensor([-1.0, -3.0, -5.0, -2.0, -4.0], dtype=torch.float64)
    # The documented bound on the decoder's raw log-scale: log s = -7 + softplus(raw + 7).
    scale = torch.exp(-7 + torch.nn.functional.softplus(raw + 7))
    reference = _reference_log_probs(mu, scale)
    params = torch.stack([mu, raw]).view(1, 2, 1, 1, 5).expand(256, 2, 1, 1, 5)
    x = (torch.arange(256, dtype=torch.float64) / 255).view(256, 1, 1, 1).expand(256, 1, 1, 5)
    ours = torch.stack([lik.log_prob(x[..., i : i + 1], params[..., i : i + 1]) for i in range(5)], 1)
    finite = reference > -20  # the reference (a difference of two CDFs) cancels in far tails
    torch.testing.assert_close(ours[finite], reference[finite], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.exp().sum(0), torch.ones(5, dtype=torch.float64))


def test_logistic_mean_and_samples():
    lik = DiscretisedLogistic().double()
    params = torch.tensor([0.4, -3.0], dtype=torch.float64).view(1, 2, 1, 1, 1)
    probs = torch.stack(
        [lik.log_prob(torch.full((1, 1, 1, 1), k / 255, dtype=torch.float64), params) for k in range(256)]
    ).exp()
    expected = (probs.squeeze() * torch.arange(256, dtype=torch.float64) / 255).sum()
    torch.testing.assert_close(lik.mean(params).squeeze(), expected)
    draws = lik.sample(params.expand(20000, 2, 1, 1, 1), torch.Generator().manual_seed(0))
    assert abs(draws.mean().item() - expected.item()) < 0.01
    assert torch.equal(draws, (draws * 255).round() / 255)


def test_shapes_dataset_is_deterministic_and_labelled():
    a, b = shapes(None, "train", train_images=50), shapes(None, "train", train_images=50)
    assert torch.equal(a.images, b.images) and a.images.shape == (50, 1, 28, 28)
    assert set(a.labels.tolist()) <= {0, 1, 2}
    assert not torch.equal(shapes(None, "test", test_images=50).images, a.images)
    assert (a.images.flatten(1).amax(1) >= 128).all()  # every image shows a shape


def test_resconv_shapes():
    encoder, decoder = resconv((1, 28, 28), 4, 2, channels=8)
    assert encoder(torch.zeros(3, 1, 28, 28)).shape == (3, 8)
    assert decoder(torch.zeros(3, 4)).shape == (3, 2, 1, 28, 28)


def test_cyclical_beta_rises_over_each_cycles_first_part_then_stays():
    from vaecli_shapes.cyclical import CyclicalKL

    from vaecli.plugin import Progress, Terms

    objective = CyclicalKL(cycles=2, ratio=0.5, beta=2.0)  # 8 epochs: cycles of 4, rising over 2
    expected = {0.0: 0.0, 1.0: 1.0, 2.0: 2.0, 3.5: 2.0, 4.0: 0.0, 5.0: 1.0, 7.9: 2.0}
    for done, beta in expected.items():
        assert abs(objective.beta_at(Progress(done, 8)) - beta) < 1e-12, done
    terms = Terms(torch.tensor([[-10.0], [-20.0]]), torch.tensor([[1.0, 2.0], [0.5, 0.5]]))
    loss = objective.loss(terms, Progress(1.0, 8))  # beta 1: -(recon - KL)
    assert torch.allclose(loss, torch.tensor([13.0, 21.0]))


def test_csv_callback_refuses_a_path():
    import pytest
    from vaecli_shapes.csvlog import CsvLog

    from vaecli.plugin import UsageError

    with pytest.raises(UsageError):
        CsvLog(file="../elsewhere.csv")


def test_laplace_prior_against_torch_distributions():
    from torch.distributions import Laplace as TorchLaplace
    from vaecli_shapes.laplace import Laplace

    prior = Laplace(3, (1, 8, 8), scale=0.7)
    z = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(0)) * 2
    torch.testing.assert_close(prior.log_prob(z), TorchLaplace(0.0, 0.7).log_prob(z).sum(-1))
    draws = prior.sample(100_000, torch.Generator().manual_seed(1))
    assert abs(float(draws.abs().mean()) - 0.7) < 0.01  # E|z| = b
    assert abs(float(prior.sample(100_000, torch.Generator().manual_seed(1), 0.5).abs().mean()) - 0.35) < 0.01
