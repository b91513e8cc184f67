"""Architectures give the shapes the contract asks for, for any image size."""

import pytest
import torch

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
    [({"hidden": "0"}, "positive"), ({"hidden": "a,b"}, "integers"), ({"depth": "3"}, "no option 'depth'")],
)
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        build_model(ModelSpec(input_shape=(1, 28, 28), latent_dim=4, architecture_options=options))


def test_unknown_architecture():
    with pytest.raises(UsageError, match="unknown architecture 'transformer'.*conv, mlp"):
        build_model(ModelSpec(input_shape=(1, 28, 28), latent_dim=4, architecture="transformer"))
