"""Architectures give the shapes the contract asks for, for any image size."""

import pytest
import torch

from vaecli.architectures import ACTIVATIONS, ELU
from vaecli.errors import UsageError
from vaecli.model import ModelSpec, build_model


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 17, 23), (3, 64, 48)])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_shapes_for_any_image_size(arch, shape):
    model = build_model(ModelSpec(input_shape=shape, latent_dim=5, architecture=arch))
    x = torch.rand(3, *shape)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert model.decode(mu).shape == (3, 1, *shape)


def test_hidden_sizes_are_configurable():
    model = build_model(
        ModelSpec(input_shape=(1, 28, 28), latent_dim=4, architecture_options={"hidden": "64,32"})
    )
    widths = [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [64, 32, 8]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hidden": "0"}, "positive"),
        ({"hidden": "a,b"}, "integers"),
        ({"depth": "3"}, "no option 'depth'"),
        ({"activation": "sigmoidal"}, "activation: unknown 'sigmoidal' \\(use elu, relu"),
    ],
)
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        build_model(ModelSpec(input_shape=(1, 28, 28), latent_dim=4, architecture_options=options))


def test_unknown_architecture():
    with pytest.raises(UsageError, match="unknown architecture 'transformer'.*conv, mlp"):
        build_model(ModelSpec(input_shape=(1, 28, 28), latent_dim=4, architecture="transformer"))


def test_elu_matches_torch_in_value_and_gradient():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64).requires_grad_()
    torch.testing.assert_close(ELU()(x), torch.nn.functional.elu(x))
    (ours,) = torch.autograd.grad(ELU()(x).sin().sum(), x)
    (reference,) = torch.autograd.grad(torch.nn.functional.elu(x).sin().sum(), x)
    torch.testing.assert_close(ours, reference)
    small = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ELU(), (small,))
    single = torch.randn(1000) * 5
    assert (ELU()(single) - torch.nn.functional.elu(single)).abs().max() < 1e-6


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_builds_and_is_used(arch, name):
    spec = ModelSpec(
        input_shape=(1, 12, 12), latent_dim=3, architecture=arch, architecture_options={"activation": name}
    )
    model = build_model(spec)
    kinds = {type(m) for m in model.modules()}
    assert ACTIVATIONS[name] in kinds
    assert not ({ACTIVATIONS[other] for other in ACTIVATIONS if other != name} & kinds)


def test_the_mlp_uses_elu_and_the_conv_relu_by_default():
    assert ELU in {type(m) for m in build_model(ModelSpec((1, 8, 8), 2)).modules()}
    assert torch.nn.ReLU in {
        type(m) for m in build_model(ModelSpec((1, 8, 8), 2, architecture="conv")).modules()
    }
