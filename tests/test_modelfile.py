"""The model file: safetensors round trips and refusals."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vaecli.architectures import ELU
from vaecli.devices import place
from vaecli.errors import VaeError
from vaecli.modelfile import FORMAT, FORMAT_VERSION, load_model, read_header, save_model
from vaecli.models import ModelSpec, build_model


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_round_trip_reproduces_outputs_exactly(tmp_path, arch):
    torch.manual_seed(3)
    spec = ModelSpec(input_shape=(1, 28, 28), latent_dim=6, architecture=arch)
    model = build_model(spec).eval()
    path = tmp_path / "m.safetensors"
    save_model(path, model, {"metrics": {"test_neg_elbo": 1.5}})
    loaded, header = load_model(path)
    place(model, "cpu")  # (as load_model places it: on a CPU a conv model's weights go channels-last)
    x = torch.rand(4, 1, 28, 28)
    z = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(model.encoder(x), loaded.encoder(x))
        assert torch.equal(model.decode(z), loaded.decode(z))
    assert header["model"]["architecture"] == arch
    assert header["model"]["input_shape"] == [1, 28, 28]
    assert header["metrics"] == {"test_neg_elbo": 1.5}
    assert header["vaecli_version"]
    # No temporary files are left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_a_run_folder_is_accepted_where_a_model_is(small_run):
    model, header = load_model(small_run)
    assert header["data"]["name"] == "mnist"
    assert header["data"]["preprocessing"]["binarise"]
    assert header["training"]["epochs"] == 2
    assert set(header["metrics"]) >= {"test_neg_elbo", "test_kl", "test_reconstruction"}
    assert header["plugins"]["vaecli"]
    assert model.latent_dim == 8


def test_not_a_model(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(VaeError, match="not a safetensors model file"):
        load_model(junk)
    with pytest.raises(VaeError, match="no model at"):
        load_model(tmp_path / "missing.safetensors")


def test_safetensors_of_something_else(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(VaeError, match="not a vaecli model"):
        load_model(other)


def test_newer_format_and_mismatched_tensors(tmp_path):
    model = build_model(ModelSpec(input_shape=(1, 8, 8), latent_dim=2, architecture_options={"hidden": "16"}))
    path = tmp_path / "m.safetensors"
    save_model(path, model, {})
    header = read_header(path)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={FORMAT: json.dumps({**header, "format_version": 99})})
    with pytest.raises(VaeError, match="format 99"):
        load_model(newer)
    wrong = tmp_path / "wrong.safetensors"
    header["model"]["latent_dim"] = 3
    save_file(tensors, str(wrong), metadata={FORMAT: json.dumps(header)})
    with pytest.raises(VaeError, match="do not fit"):
        load_model(wrong)


def test_architecture_defaults_are_recorded(tmp_path):
    model = build_model(ModelSpec(input_shape=(1, 8, 8), latent_dim=2, architecture_options={"hidden": "16"}))
    save_model(tmp_path / "m.safetensors", model, {})
    options = read_header(tmp_path / "m.safetensors")["model"]["architecture_options"]
    assert options == {"hidden": "16", "pixel_features": 16, "activation": "elu"}


def test_a_format_1_mlp_is_rebuilt_with_the_relu_it_was_trained_with(tmp_path):
    # Format 1 stored only the given options, and the MLP's activation was always ReLU.
    torch.manual_seed(4)
    spec = ModelSpec(input_shape=(1, 8, 8), latent_dim=2, architecture_options={"activation": "relu"})
    model = build_model(spec).eval()
    path = tmp_path / "m.safetensors"
    save_model(path, model, {})
    header = read_header(path)
    old = {**header, "format_version": 1, "model": {**header["model"], "architecture_options": {}}}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", FORMAT: json.dumps(old)})
    loaded, _ = load_model(path)
    assert loaded.spec.architecture_options == {"activation": "relu"}
    z = torch.randn(5, 2) * 3
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
        assert any(isinstance(m, torch.nn.ReLU) for m in loaded.modules())
        assert not any(isinstance(m, ELU) for m in loaded.modules())


def _rewrite(path, header, tensors):
    save_file(tensors, str(path), metadata={"format": "pt", FORMAT: json.dumps(header)})


def test_a_format_2_model_has_no_output_offset_and_loads_with_a_zero_one(tmp_path):
    torch.manual_seed(5)
    model = build_model(ModelSpec(input_shape=(1, 8, 8), latent_dim=2, architecture_options={"hidden": "16"}))
    path = tmp_path / "m.safetensors"
    save_model(path, model, {})
    header = read_header(path)
    assert header["format_version"] == FORMAT_VERSION
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "output_offset"}
    _rewrite(path, {**header, "format_version": 2}, tensors)
    loaded, _ = load_model(path)
    assert torch.equal(loaded.output_offset, torch.zeros(1, 1, 8, 8))
    z = torch.randn(5, 2)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decoder(z))
    # From format 3 on the offset is part of the model: a file without it is damaged.
    _rewrite(path, header, tensors)
    with pytest.raises(VaeError, match="tensor output_offset: file has missing"):
        load_model(path)


def test_a_fitted_output_offset_round_trips(tmp_path):
    model = build_model(ModelSpec(input_shape=(1, 8, 8), latent_dim=2, architecture_options={"hidden": "16"}))
    model.start_from_data(torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8))
    assert model.output_offset.abs().min() > 0
    save_model(tmp_path / "m.safetensors", model, {})
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert torch.equal(loaded.output_offset, model.output_offset)
