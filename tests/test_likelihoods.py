"""Each likelihood against torch.distributions and hand computations; options and modes."""

import math

import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal

from vaecli import likelihoods
from vaecli.errors import UsageError
from vaecli.evaluation import bits_per_dim
from vaecli.likelihoods import Bernoulli, Categorical, ChunkedCrossEntropy, Gaussian, PixelCNN, dequantise
from vaecli.models import ModelSpec, build_likelihood, build_model

SHAPE = (2, 5, 7)  # channels, height, width: a colour-like shape catches axis mistakes


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_gaussian_fixed_sigma_against_normal_with_dequantisation_constant():
    g = _gen()
    x = dequantise(torch.randint(0, 256, (4, *SHAPE), dtype=torch.uint8, generator=g), g).double()
    params = torch.rand(4, 1, *SHAPE, generator=g, dtype=torch.float64)
    ours = Gaussian(sigma="0.2").double().log_prob(x, params)
    density = Normal(params[:, 0], 0.2).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(ours, density - math.prod(SHAPE) * math.log(256))


def test_gaussian_learned_sigmas_against_normal():
    g = _gen(1)
    x = torch.rand(3, *SHAPE, generator=g, dtype=torch.float64)
    per_pixel = Gaussian(sigma="pixel").double()
    assert per_pixel.params_per_pixel == 2
    params = torch.randn(3, 2, *SHAPE, generator=g, dtype=torch.float64)
    sigma = torch.exp(
        Gaussian.LOG_SIGMA_MIN + torch.nn.functional.softplus(params[:, 1] - Gaussian.LOG_SIGMA_MIN)
    )
    expected = Normal(params[:, 0], sigma).log_prob(x).flatten(1).sum(1) - math.prod(SHAPE) * math.log(256)
    torch.testing.assert_close(per_pixel.log_prob(x, params), expected)

    one = Gaussian(sigma="learned").double()
    assert [n for n, _ in one.named_parameters()] == ["raw_log_sigma"]
    with torch.no_grad():
        one.raw_log_sigma.fill_(-1.3)
    sigma = math.exp(Gaussian.LOG_SIGMA_MIN + math.log1p(math.exp(-1.3 - Gaussian.LOG_SIGMA_MIN)))
    expected = Normal(params[:, 0], sigma).log_prob(x).flatten(1).sum(1) - math.prod(SHAPE) * math.log(256)
    torch.testing.assert_close(one.log_prob(x, params[:, :1]), expected)


def test_gaussian_log_scale_cannot_collapse():
    params = torch.zeros(1, 2, 1, 1, 1)
    params[:, 1] = -1e4  # the decoder asks for sigma -> 0
    assert Gaussian(sigma="pixel").log_sigma(params).item() >= Gaussian.LOG_SIGMA_MIN
    assert torch.isfinite(Gaussian(sigma="pixel").log_prob(torch.full((1, 1, 1, 1), 0.5), params)).all()


def test_dequantised_gaussian_bits_per_dim_by_hand():
    # One 8-bit image of 4 pixels, values 0, 64, 128, 255, and u = 0.5 for each: y = (x + 0.5) / 256.
    pixels = torch.tensor([0.0, 64.0, 128.0, 255.0])
    y = ((pixels + 0.5) / 256).view(1, 1, 2, 2)
    mean, sigma = 0.25, 0.5
    by_hand_nats = 0.0
    for value in y.flatten().tolist():
        by_hand_nats += 0.5 * math.log(2 * math.pi * sigma**2) + (value - mean) ** 2 / (2 * sigma**2)
    by_hand_nats += 4 * math.log(256)  # each pixel's bin has width 1/256
    by_hand_bpd = by_hand_nats / (4 * math.log(2))
    nats = -Gaussian(sigma=sigma).log_prob(y, torch.full((1, 1, 1, 2, 2), mean)).item()
    assert nats == pytest.approx(by_hand_nats, rel=1e-6)
    assert bits_per_dim(nats, 4) == pytest.approx(by_hand_bpd, rel=1e-6)


def test_dequantisation_stays_inside_each_pixels_bin():
    images = torch.randint(0, 256, (50, *SHAPE), dtype=torch.uint8)
    y = Gaussian().prepare(images, _gen())
    assert torch.equal(torch.floor(y * 256).to(torch.uint8), images)


@pytest.mark.parametrize("bins", [256, 16, 2])
def test_categorical_against_torch_categorical(bins):
    g = _gen(2)
    lik = Categorical(bins=bins).double()
    images = torch.randint(0, 256, (3, *SHAPE), dtype=torch.uint8, generator=g)
    x = lik.prepare(images).double()
    levels = torch.div(images.long() * bins, 256, rounding_mode="floor")
    torch.testing.assert_close(lik.levels(x), levels)
    params = torch.randn(3, bins, *SHAPE, generator=g, dtype=torch.float64) * 3
    reference = TorchCategorical(logits=params.movedim(1, -1)).log_prob(levels).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(x, params), reference)
    # The same numbers when the decoder lays its logits out classes-last (as PixelHead does).
    classes_last = params.movedim(1, -1).contiguous().movedim(-1, 1)
    torch.testing.assert_close(lik.log_prob(x, classes_last), reference)


def test_chunked_cross_entropy_gradient_against_torch(monkeypatch):
    """The categorical's own cross-entropy (chunked, recomputing the softmax) has the value and
    the gradient of torch's, also when the rows span several chunks."""
    monkeypatch.setattr(likelihoods.categorical, "CROSS_ENTROPY_CHUNK_BYTES", 7 * 16 * 8)  # 7 rows a chunk
    torch.manual_seed(3)
    logits = (4 * torch.randn(50, 16, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 16, (50,))
    weights = torch.rand(50, dtype=torch.float64)
    ours = ChunkedCrossEntropy.apply(logits, target)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    reference = -TorchCategorical(logits=logits).log_prob(target)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), logits)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad_ours, grad_reference)
    assert torch.autograd.gradcheck(lambda z: ChunkedCrossEntropy.apply(z, target), (logits,))


def test_categorical_mean_mode_and_sample():
    lik = Categorical(bins=4)
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).view(1, 4, 1, 1, 1)
    assert lik.mean(logits).item() == pytest.approx((0 * 0.1 + 1 * 0.2 + 2 * 0.3 + 3 * 0.4) / 3)
    assert lik.mode(logits).item() == 1.0
    draws = lik.sample(logits.expand(20000, 4, 1, 1, 1), _gen(3)).flatten()
    frequencies = torch.bincount((draws * 3).round().long(), minlength=4).float() / draws.numel()
    torch.testing.assert_close(frequencies, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015, rtol=0)


def test_modes_per_likelihood():
    assert Bernoulli.modes == ("mean", "sample")
    assert Gaussian.modes == ("mean", "sample")
    assert Categorical.modes == ("mean", "mode", "sample")
    assert PixelCNN.modes == ("mean", "sample")
    with pytest.raises(UsageError, match="likelihood 'bernoulli' has no mode 'mode'"):
        Bernoulli().check_mode("mode")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("bernoulli", {"sigma": "0.1"}, "has no option 'sigma'"),
        ("categorical", {"bins": "1"}, "bins must be from 2 to 256"),
        ("categorical", {"bins": "300"}, "bins must be from 2 to 256"),
        ("categorical", {"bins": "many"}, "integer"),
        ("gaussian", {"sigma": "-1"}, "sigma must be positive"),
        ("gaussian", {"sigma": "wide"}, "sigma wants a number"),
        ("gaussian", {"bins": "4"}, "no option 'bins'"),
        ("pixelcnn", {"kernel": "4"}, "kernel must be an odd number from 3 to 63, got 4"),
        ("pixelcnn", {"kernel": "1"}, "kernel must be an odd number from 3 to 63"),
        ("pixelcnn", {"kernel": "65"}, "kernel must be an odd number from 3 to 63"),
        ("pixelcnn", {"width": "0"}, "width wants an integer of at least 1, got '0'"),
        ("pixelcnn", {"features": "0"}, "features wants an integer of at least 1"),
        ("pixelcnn", {"layers": "-1"}, "layers wants an integer of at least 0"),
        ("pixelcnn", {"layers": "two"}, "integer"),
        ("pixelcnn", {"bins": "2"}, "no option 'bins'"),
        ("poisson", {}, "unknown likelihood 'poisson'"),
    ],
)
def test_bad_likelihood_options(name, options, message):
    with pytest.raises(UsageError, match=message):
        build_likelihood(name, options)


@pytest.mark.parametrize(
    ("likelihood", "options", "arch"),
    [
        ("gaussian", {"sigma": "pixel"}, "mlp"),
        ("gaussian", {"sigma": "learned"}, "conv"),
        ("categorical", {}, "mlp"),
        ("categorical", {"bins": "16"}, "conv"),
    ],
)
def test_models_for_every_likelihood_and_architecture(likelihood, options, arch):
    spec = ModelSpec((1, 28, 28), 4, architecture=arch, likelihood=likelihood, likelihood_options=options)
    model = build_model(spec)
    x = model.likelihood.prepare(torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8))
    terms = model.elbo(x)
    assert terms.elbo.shape == (3,) and torch.isfinite(terms.elbo).all()


def reference_log_prob(likelihood, x, params):
    """Per-pixel log p(x | params) from torch.distributions, for params (P, C, H, W) shared by every
    image x (N, C, H, W); the dequantisation constant and sigma's lower bound aside."""
    if isinstance(likelihood, Bernoulli):
        return torch.distributions.Bernoulli(logits=params[0], validate_args=False).log_prob(x)
    if isinstance(likelihood, Gaussian):
        sigma = likelihood.log_sigma(params.unsqueeze(0)).exp().expand(1, *params.shape[1:])[0]
        return Normal(params[0], sigma).log_prob(x)
    return TorchCategorical(logits=params.movedim(0, -1)).log_prob(likelihood.levels(x))


@pytest.mark.parametrize(
    ("name", "options"),
    [("bernoulli", {}), ("gaussian", {"sigma": "pixel"}), ("gaussian", {"sigma": "0.1"}),
     ("categorical", {"bins": "16"})],
)  # fmt: skip
def test_constant_fit_is_the_best_decoder_output_that_ignores_z(name, options):
    # Its mean log-likelihood over the prepared images (torch.distributions) is above that of the
    # fit moved any way: at every pixel, or for gaussian's per-pixel sigma, which starts at one
    # value for all pixels, in total over the pixels with sigma moved alike at each. Bernoulli's
    # is linear in x, so the binarisations' mean stands for all of them; the dequantised
    # Gaussian's is averaged over 40 preparations.
    likelihood = build_likelihood(name, options).double()
    g = _gen(7)
    images = torch.randint(0, 256, (300, *SHAPE), dtype=torch.uint8, generator=g)
    fit = likelihood.constant_fit(images).double()
    assert fit.shape == (likelihood.params_per_pixel, *SHAPE) and fit.dtype == torch.float64
    draws = 40 if isinstance(likelihood, Gaussian) else 1
    prepare = likelihood.encoder_input if isinstance(likelihood, Bernoulli) else likelihood.prepare
    x = torch.cat([prepare(images) for _ in range(draws)]).double()

    def per_pixel(params):
        return reference_log_prob(likelihood, x, params).mean(0)

    shared_sigma = likelihood.params_per_pixel == 2
    if shared_sigma:
        assert (fit[1] == fit[1, 0, 0, 0]).all()
    best = per_pixel(fit)
    for _ in range(6):
        step = 0.05 * torch.randn(fit.shape, generator=g, dtype=torch.float64).sign()
        if shared_sigma:
            step[1] = step[1, 0, 0, 0]
        for moved in (per_pixel(fit + step), per_pixel(fit - step)):
            assert best.sum() >= moved.sum() if shared_sigma else (best >= moved).all()


def test_a_learned_sigma_starts_at_its_best_fit_to_the_data():
    # Gaussian's sigma=learned is the likelihood's own parameter, not a decoder output: it starts
    # at the one sigma that, about constant_fit's per-pixel means, maximises the mean
    # log-likelihood of the dequantised images (torch.distributions.Normal, 40 preparations).
    likelihood = Gaussian(sigma="learned").double()
    g = _gen(5)
    images = torch.randint(0, 256, (300, *SHAPE), dtype=torch.uint8, generator=g)
    likelihood.fit_own_parameters(images)
    means = likelihood.constant_fit(images).double()[0]
    x = torch.cat([likelihood.prepare(images, g) for _ in range(40)]).double()

    def mean_log_likelihood(log_sigma: float) -> float:
        return Normal(means, math.exp(log_sigma)).log_prob(x).sum((1, 2, 3)).mean().item()

    fitted = likelihood.log_sigma(means.unsqueeze(0)).item()
    pixels = images.double()
    pooled = ((pixels - pixels.mean(0)).square().mean() + 1 / 12) / 256**2  # by hand
    assert fitted == pytest.approx(0.5 * math.log(pooled.item()), abs=1e-9)
    for step in (0.02, -0.02):
        assert mean_log_likelihood(fitted) > mean_log_likelihood(fitted + step)
    # The other likelihoods have no parameters of their own to fit.
    for other in (Bernoulli(), Gaussian(sigma="pixel"), Gaussian(sigma="0.1"), Categorical(bins=4)):
        other.fit_own_parameters(images)
        assert list(other.parameters()) == []


def test_constant_fit_by_hand():
    # Two images of 2 x 1 pixels: one pixel always 0, the other 0 and 255.
    images = torch.tensor([[[[0], [0]]], [[[0], [255]]]], dtype=torch.uint8)
    bernoulli = Bernoulli().constant_fit(images)
    torch.testing.assert_close(bernoulli, torch.logit(torch.tensor([[[[0.5 / 3], [1.5 / 3]]]])))
    gaussian = Gaussian(sigma="pixel").constant_fit(images)
    torch.testing.assert_close(gaussian[0, 0, :, 0], torch.tensor([0.5, 128.0]) / 256)
    sigma = math.sqrt((127.5**2 / 2 + 1 / 12) / 256**2)  # the pixels' variances pooled
    log_sigma = Gaussian(sigma="pixel").log_sigma(gaussian.unsqueeze(0))[0, 0, :, 0]
    torch.testing.assert_close(log_sigma, torch.full((2,), math.log(sigma)))
    categorical = Categorical(bins=2).constant_fit(images)  # levels: pixel * 2 // 256
    frequencies = torch.tensor([[2.5, 1.5], [0.5, 1.5]]) / 3  # level 0, level 1 at each pixel
    torch.testing.assert_close(categorical[:, 0, :, 0], frequencies.log())


def test_constant_fit_sums_a_dataset_in_chunks_of_whole_images(monkeypatch):
    images = torch.randint(0, 256, (50, *SHAPE), dtype=torch.uint8, generator=_gen(3))
    made = [Bernoulli(), Gaussian(sigma="pixel"), Categorical(bins=16)]
    whole = [likelihood.constant_fit(images) for likelihood in made]  # in one chunk
    monkeypatch.setattr(likelihoods.base, "DATASET_CHUNK_BYTES", 8 * math.prod(SHAPE) * 3)
    assert len(list(likelihoods.dataset_chunks(images))) == 17  # 16 of 3 images and one of 2
    for likelihood, expected in zip(made, whole, strict=True):
        torch.testing.assert_close(likelihood.constant_fit(images), expected)


def test_pixel_moments_are_the_exact_integer_sums(monkeypatch):
    """Sums of bright pixels in chunks at the float32 limit and past it: the moments equal those
    of numpy's exact int64 sums, bit for bit, whatever the chunk size."""
    import numpy as np

    images = torch.randint(250, 256, (1100, *SHAPE), dtype=torch.uint8, generator=_gen(5))
    images[:300] = 255  # a first chunk of 258 images of 255: 258 * 255^2 is just under 2^24
    values = images.numpy().astype(np.int64)
    mean = torch.from_numpy(values.sum(0) / 1100)
    variance = torch.from_numpy((values**2).sum(0) / 1100) - mean.square()
    for chunk_bytes in (likelihoods.base.DATASET_CHUNK_BYTES, 4 * math.prod(SHAPE) * 7):
        monkeypatch.setattr(likelihoods.base, "DATASET_CHUNK_BYTES", chunk_bytes)
        ours = likelihoods.pixel_moments(images)
        assert torch.equal(ours[0], mean) and torch.equal(ours[1], variance.clamp(min=0.0))
    most = likelihoods.base.EXACT_FLOAT32_IMAGES
    assert most * 255**2 < 2**24 <= (most + 1) * 255**2
