"""The autoregressive ``pixelcnn`` likelihood: a normalised distribution over binary images whose
pixels depend only on earlier pixels in their window, checked by enumeration, autograd and
torch.distributions; its draws, its mean, and a real run through the commands."""

import itertools
import json

import pytest
import torch
from safetensors import safe_open

from vaecli.cli import main
from vaecli.likelihoods import Bernoulli, PixelCNN, pixelcnn
from vaecli.models import ModelSpec, build_model


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scrambled(likelihood: PixelCNN, seed: int = 0) -> PixelCNN:
    """``likelihood`` in float64 with every weight drawn at random: a fresh one's last layer is
    zero, which would hide the window."""
    g = _gen(seed)
    for parameter in likelihood.parameters():
        with torch.no_grad():
            parameter.copy_(torch.randn(parameter.shape, generator=g, dtype=parameter.dtype))
    return likelihood.double()


def every_binary_image(shape: tuple[int, ...]) -> torch.Tensor:
    pixels = torch.tensor(list(itertools.product([0.0, 1.0], repeat=torch.Size(shape).numel())))
    return pixels.view(-1, *shape).double()


@pytest.mark.parametrize("shape", [(1, 2, 3), (2, 2, 2)])
def test_probabilities_of_every_binary_image_sum_to_one(shape):
    likelihood = scrambled(PixelCNN(kernel=3, width=5, layers=2, features=3))
    images = every_binary_image(shape)
    params = torch.randn(1, 3, *shape, generator=_gen(1), dtype=torch.float64)
    params = params.expand(len(images), -1, -1, -1, -1)
    total = likelihood.log_prob(images, params).logsumexp(0)
    assert total.item() == pytest.approx(0.0, abs=1e-12)


def test_each_pixel_depends_only_on_the_earlier_pixels_of_its_own_window():
    kernel, (c, height, width) = 5, (2, 6, 7)
    likelihood = scrambled(PixelCNN(kernel=kernel, width=6, layers=1))
    x = torch.bernoulli(torch.full((1, c, height, width), 0.5, dtype=torch.float64), generator=_gen(2))
    params = torch.randn(1, 2, c, height, width, generator=_gen(3), dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: likelihood.logits(v, params), x)
    depends = jacobian.view(c, height, width, c, height, width) != 0
    pixels = list(itertools.product(range(c), range(height), range(width)))
    for (ci, i, j), (cj, k, m) in itertools.product(pixels, repeat=2):
        earlier = k < i or (k == i and m < j)
        inside = i - k <= kernel // 2 and abs(j - m) <= kernel // 2
        assert depends[ci, i, j, cj, k, m].item() == (ci == cj and earlier and inside), (ci, i, j, cj, k, m)


def test_a_draw_has_the_probabilities_the_parallel_pass_scores():
    likelihood = scrambled(PixelCNN(kernel=5, width=8, layers=2, features=3))
    params = torch.randn(4, 3, 2, 6, 7, generator=_gen(4), dtype=torch.float64)
    x, probs = likelihood.draw(params, _gen(5))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(probs, torch.sigmoid(likelihood.logits(x, params)))
    reference = torch.distributions.Bernoulli(probs=probs).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(likelihood.log_prob(x, params), reference)


def test_scoring_without_gradients_goes_in_cache_sized_pieces_with_the_same_numbers(monkeypatch):
    likelihood = scrambled(PixelCNN(kernel=5, width=8, layers=1, features=3))
    x = torch.bernoulli(torch.full((11, 2, 6, 7), 0.4, dtype=torch.float64), generator=_gen(10))
    params = torch.randn(11, 3, 2, 6, 7, generator=_gen(11), dtype=torch.float64)
    whole = likelihood.log_prob(x, params)  # (with gradients: one pass)
    monkeypatch.setattr(pixelcnn, "SCORE_CHUNK_BYTES", 4 * 8 * 2 * 6 * 7 * 4)  # four images a piece
    seen = []
    logits = likelihood._logits
    monkeypatch.setattr(likelihood, "_logits", lambda a, b: seen.append(len(a)) or logits(a, b))
    with torch.no_grad():
        pieces = likelihood.log_prob(x, params)
    assert seen == [4, 4, 3]
    torch.testing.assert_close(pieces, whole.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("gradients", [True, False])
def test_many_draws_per_image_read_its_window_once_with_the_numbers_of_repeated_images(
    monkeypatch, gradients
):
    likelihood = scrambled(PixelCNN(kernel=5, width=8, layers=1, features=3))
    x = torch.bernoulli(torch.full((3, 2, 6, 7), 0.4, dtype=torch.float64), generator=_gen(12))
    params = torch.randn(15, 3, 2, 6, 7, generator=_gen(13), dtype=torch.float64, requires_grad=True)
    repeated = likelihood.log_prob(x.repeat_interleave(5, dim=0), params)
    expected_grad = torch.autograd.grad(repeated.square().sum(), [params, *likelihood.parameters()])
    # Pieces of four draws: they cross from one image's draws into the next one's.
    monkeypatch.setattr(pixelcnn, "SCORE_CHUNK_BYTES", 4 * 8 * 2 * 6 * 7 * 4)
    planes = []
    likelihood.window.register_forward_hook(lambda module, inputs, out: planes.append(len(inputs[0])))
    with torch.set_grad_enabled(gradients):
        scores = likelihood.log_prob_draws(x, params)
    assert planes == [3 * 2]  # (once, for the three images' two channels)
    torch.testing.assert_close(scores, repeated, rtol=0, atol=1e-12)
    if gradients:
        grads = torch.autograd.grad(scores.square().sum(), [params, *likelihood.parameters()])
        for got, expected in zip(grads, expected_grad, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_the_default_draws_score_is_the_repeated_images_score():
    likelihood = Bernoulli()
    x = torch.bernoulli(torch.full((3, 1, 4, 5), 0.3, dtype=torch.float64), generator=_gen(14))
    params = torch.randn(6, 1, 1, 4, 5, generator=_gen(15), dtype=torch.float64)
    reference = torch.distributions.Bernoulli(logits=params[:, 0]).log_prob(x.repeat_interleave(2, dim=0))
    torch.testing.assert_close(likelihood.log_prob_draws(x, params), reference.flatten(1).sum(1))


@pytest.mark.parametrize("likelihood", [Bernoulli(), PixelCNN(kernel=3)])
@pytest.mark.parametrize("rows", [5, 2])
def test_draws_that_do_not_divide_among_the_images_are_refused(likelihood, rows):
    x, params = torch.zeros(3, 1, 4, 5), torch.zeros(rows, likelihood.params_per_pixel, 1, 4, 5)
    with pytest.raises(ValueError, match=f"params for {rows} draws do not divide among 3 images"):
        likelihood.log_prob_draws(x, params)


def test_draws_follow_the_distribution_and_the_mean_estimates_its_marginals(monkeypatch):
    shape = (1, 2, 2)
    likelihood = scrambled(PixelCNN(kernel=3, width=4, layers=1), seed=6)
    params = 0.5 * torch.randn(1, 2, *shape, generator=_gen(7), dtype=torch.float64)
    images = every_binary_image(shape)
    exact = likelihood.log_prob(images, params.expand(len(images), -1, -1, -1, -1)).exp()
    draws = likelihood.sample(params.expand(20000, -1, -1, -1, -1), _gen(8))
    codes = (draws.flatten(1) * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)).sum(1).long()
    frequencies = torch.bincount(codes, minlength=16).double() / len(draws)
    torch.testing.assert_close(frequencies, exact, atol=0.015, rtol=0)

    marginals = (exact.view(-1, 1) * images.flatten(1)).sum(0).view(1, *shape)
    first = torch.sigmoid(likelihood.logits(torch.zeros(1, *shape, dtype=torch.float64), params))[0, 0, 0, 0]
    assert likelihood.mean(params)[0, 0, 0, 0].item() == pytest.approx(first.item())  # nothing before it
    monkeypatch.setattr(pixelcnn, "MEAN_DRAWS", 4000)
    monkeypatch.setattr(pixelcnn, "MEAN_CHUNK", 1)  # (two images: two chunks)
    twice = params.expand(2, -1, -1, -1, -1)
    torch.testing.assert_close(likelihood.mean(twice), marginals.expand(2, -1, -1, -1), atol=0.03, rtol=0)
    torch.testing.assert_close(likelihood.mean(twice), likelihood.mean(twice))  # the same pictures each time


def test_a_fresh_one_is_the_plain_bernoulli_decoder_of_its_first_feature():
    likelihood = PixelCNN(features=3)
    g = _gen(9)
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3), generator=g)
    params = torch.randn(5, 3, 1, 28, 28, generator=g)
    torch.testing.assert_close(likelihood.log_prob(x, params), Bernoulli().log_prob(x, params[:, :1]))
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=g)
    fit = likelihood.constant_fit(images)
    assert fit.shape == (3, 1, 28, 28)
    torch.testing.assert_close(fit[:1], Bernoulli().constant_fit(images))
    assert (fit[1:] == 0).all()


@pytest.mark.parametrize("model", ["vae", "hierarchical"])
def test_models_train_their_decoder_through_it(model):
    spec = ModelSpec((1, 28, 28), 4, model=model, likelihood="pixelcnn", likelihood_options={"features": "3"})
    built = build_model(spec)
    x = built.likelihood.prepare(torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8), _gen(10))
    terms = built.elbo(x)
    assert terms.elbo.shape == (3,) and torch.isfinite(terms.elbo).all()
    terms.elbo.sum().backward()
    assert built.likelihood.window.weight.grad is not None  # its own layers learn with the model


def test_a_run_with_it_through_the_commands(mnist_root, tmp_path, capsys):
    run = tmp_path / "run"
    train = ["train", "--data", "mnist", "--data-dir", str(mnist_root), "--likelihood", "pixelcnn",
             "--likelihood-opt", "width=8", "--latent-dim", "4", "--arch-opt", "hidden=64", "--epochs", "1",
             "--limit-train", "768", "--limit-test", "128", "--out", str(run), "-q"]  # fmt: skip
    assert main(train) == 0
    with safe_open(run / "model.safetensors", "pt") as f:
        assert any(key.startswith("likelihood.window.") for key in f.keys())  # its weights are kept
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "3", "--limit", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["neg_log_px"] <= report["neg_elbo"] + 1.0  # (3 draws: the bound is near the ELBO)
    assert main(["sample", str(run), "--n", "4", "--mode", "sample", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    capsys.readouterr()
    decoder = ["export", str(run), str(tmp_path / "dec.pt2"), "--format", "torch-export", "--part", "decoder"]
    assert main(decoder) == 2
    assert capsys.readouterr().err == (
        "vae: error: likelihood 'pixelcnn' draws an image pixel by pixel, so its decoder is no single "
        "program: export --part encoder\n"
    )
    assert not (tmp_path / "dec.pt2").exists()
