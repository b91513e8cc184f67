"""The ELBO's pieces against torch.distributions and closed forms."""

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal, kl_divergence

from vaecli.likelihoods import Bernoulli
from vaecli.models import ModelSpec, build_model
from vaecli.priors.normal import StandardNormal


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return StandardNormal(mu.shape[-1], (1, 1, 1)).kl(mu, logvar)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(64, 16, generator=g, dtype=torch.float64) * 3
    logvar = torch.randn(64, 16, generator=g, dtype=torch.float64) * 2
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected)


def test_kl_is_zero_only_at_the_prior():
    zero = torch.zeros(3, 5)
    assert kl_to_standard_normal(zero, zero).abs().max() == 0
    assert (kl_to_standard_normal(zero + 0.1, zero) > 0).all()


@pytest.mark.parametrize("scale", [1.0, 30.0, 200.0])
def test_bernoulli_log_prob_matches_torch_distributions(scale):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 1, 1, 28, 28, generator=g, dtype=torch.float64) * scale
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.4, dtype=torch.float64), generator=g)
    ours = Bernoulli().log_prob(x, logits)
    reference = TorchBernoulli(logits=logits[:, 0]).log_prob(x).flatten(1).sum(1)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_bernoulli_gradient_matches_torch_distributions(scale):
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(5, 1, 1, 28, 28, generator=g, dtype=torch.float64) * scale).requires_grad_()
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3, dtype=torch.float64), generator=g)
    weights = torch.randn(5, generator=g, dtype=torch.float64)
    (ours,) = torch.autograd.grad((Bernoulli().log_prob(x, logits) * weights).sum(), logits)
    reference = TorchBernoulli(logits=logits[:, 0]).log_prob(x).flatten(1).sum(1)
    (expected,) = torch.autograd.grad((reference * weights).sum(), logits)
    torch.testing.assert_close(ours, expected)
    small = logits[:2, :, :, :3, :3].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda logit: Bernoulli().log_prob(x[:2, :, :3, :3], logit), (small,))


def test_bernoulli_float32_is_within_a_thousandth_of_a_nat_of_float64():
    # float32 logits of a trained decoder's range; the reference is computed in float64.
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 1, 1, 28, 28, generator=g) * 12
    x = torch.bernoulli(torch.full((64, 1, 28, 28), 0.2), generator=g)
    reference = TorchBernoulli(logits=logits[:, 0].double()).log_prob(x.double()).flatten(1).sum(1)
    ours = Bernoulli().log_prob(x, logits)
    assert ours.dtype == torch.float32
    assert (ours.double() - reference).abs().max() < 1e-3


def test_bernoulli_half_logits_are_scored_in_float32_with_gradients_for_both_inputs():
    logits = (torch.randn(2, 1, 1, 3, 3, dtype=torch.float64) * 4).requires_grad_()
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)  # soft targets
    assert torch.autograd.gradcheck(lambda logit, target: Bernoulli().log_prob(target, logit), (logits, x))
    assert Bernoulli().log_prob(x.detach().half(), logits.detach().half()).dtype == torch.float32


def test_bernoulli_is_computed_from_logits_not_probabilities():
    # A logit of 40 in float32 has sigmoid == 1.0 exactly; log(1 - p) would be -inf.
    logits = torch.full((1, 1, 1, 1, 1), 40.0)
    x = torch.zeros(1, 1, 1, 1)
    assert Bernoulli().log_prob(x, logits).item() == pytest.approx(-40.0, abs=1e-5)


def test_elbo_is_reconstruction_minus_kl_and_reparameterised():
    torch.manual_seed(0)
    model = build_model(
        ModelSpec(input_shape=(1, 28, 28), latent_dim=4, architecture_options={"hidden": [32]})
    )
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    g = torch.Generator().manual_seed(7)
    terms = model.elbo(x, g)
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)
    # Recompute by hand: the same eps, then torch.distributions for both terms.
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = model.decode(z)[:, 0]
    recon = TorchBernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(terms.reconstruction, recon)
    torch.testing.assert_close(terms.kl, kl)
    # Gradients reach the encoder through z (the reparameterisation trick).
    (-terms.elbo.mean()).backward()
    first_encoder_layer = next(model.encoder.parameters())
    assert first_encoder_layer.grad is not None and first_encoder_layer.grad.abs().sum() > 0


def test_untrained_bernoulli_model_scores_near_uniform():
    # Zero decoder logits give p = 1/2 for every pixel: exactly 784 ln 2 nats.
    logits = torch.zeros(2, 1, 1, 28, 28)
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.5))
    torch.testing.assert_close(-Bernoulli().log_prob(x, logits), torch.full((2,), 784 * math.log(2)))
