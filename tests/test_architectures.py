"""Architectures give the shapes the contract asks for, for any image size."""

import pytest
import torch

from vaecli.architectures import ACTIVATIONS, ELU, ResidualBlock
from vaecli.errors import UsageError
from vaecli.models import ModelSpec, build_model


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


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_both_use_elu_by_default(arch):
    kinds = {type(m) for m in build_model(ModelSpec((1, 8, 8), 2, architecture=arch)).modules()}
    assert ELU in kinds and torch.nn.ReLU not in kinds


def test_residual_blocks_start_as_the_identity_and_keep_the_shapes():
    plain = build_model(ModelSpec((3, 20, 12), 4, "conv", {"channels": "8,16"}))
    spec = ModelSpec((3, 20, 12), 4, "conv", {"channels": "8,16", "blocks": 2, "norm": "group"})
    torch.manual_seed(0)
    deep = build_model(spec)
    blocks = [m for m in deep.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 8  # two after each of the encoder's and the decoder's two stages
    assert all(isinstance(b.body[0], torch.nn.GroupNorm) for b in blocks)
    x = torch.randn(5, 8, 7, 5)
    torch.testing.assert_close(blocks[0](x[:, :8]), x[:, :8], rtol=0, atol=0)
    mu, _ = deep.encode(torch.rand(5, 3, 20, 12))
    assert mu.shape == (5, 4) and deep.decode(mu).shape == (5, 1, 3, 20, 12)
    # With no blocks the conv is the model earlier versions built: the same tensors by name.
    assert [k for k in plain.state_dict()] == [
        "output_offset", "encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
        "encoder.5.weight", "encoder.5.bias", "encoder.7.weight", "encoder.7.bias", "decoder.0.weight",
        "decoder.0.bias", "decoder.2.weight", "decoder.2.bias", "decoder.5.weight", "decoder.5.bias",
        "decoder.7.weight", "decoder.7.bias",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [({"blocks": "-1"}, "blocks"), ({"norm": "batch"}, "option norm: unknown 'batch' \\(use none, group\\)")],
)
def test_bad_conv_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        build_model(ModelSpec((1, 28, 28), 4, architecture="conv", architecture_options=options))
