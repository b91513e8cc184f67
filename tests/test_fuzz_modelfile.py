"""Hostile and damaged model files: the loader and `vae sample` give one clear error, never a
traceback, a hang or a huge allocation, and never run code (safetensors holds no pickle)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from vaecli.checkpoint import FORMAT as CHECKPOINT_FORMAT
from vaecli.checkpoint import checkpoint_format_version
from vaecli.cli import main
from vaecli.errors import VaeError
from vaecli.modelfile import FORMAT, load_model, save_model
from vaecli.models import ModelSpec, build_model

FUZZ = settings(
    max_examples=1500,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    model = build_model(ModelSpec(input_shape=(1, 8, 8), latent_dim=2, architecture_options={"hidden": "8"}))
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    save_model(path, model, {"metrics": {}})
    return path.read_bytes()


def split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def loads_or_refuses(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    try:
        model, _ = load_model(path)
    except VaeError as exc:
        assert "\n" not in str(exc).strip()
    else:
        assert sum(p.numel() for p in model.parameters()) * 4 <= len(data)  # no more than the file holds


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes(tmp_path, data):
    loads_or_refuses(data, tmp_path / "m.safetensors")


@FUZZ
@given(
    cut=st.integers(min_value=0), flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255)), max_size=8)
)
def test_truncated_and_bit_flipped(tmp_path, valid_file, cut, flips):
    data = bytearray(valid_file[: cut % (len(valid_file) + 1)])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    loads_or_refuses(bytes(data), tmp_path / "m.safetensors")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    tensor=st.integers(0, 20),
    field=st.sampled_from(["dtype", "shape", "data_offsets"]),
    value=json_values | st.lists(st.integers(-(2**40), 2**62), min_size=1, max_size=4),
    length_lie=st.none() | st.integers(0, 2**64 - 1),
)
def test_hostile_tensor_headers(tmp_path, valid_file, tensor, field, value, length_lie):
    header, body = split(valid_file)
    names = sorted(k for k in header if k != "__metadata__")
    header[names[tensor % len(names)]][field] = value
    data = join(header, body)
    if length_lie is not None:
        data = struct.pack("<Q", length_lie) + data[8:]
    loads_or_refuses(data, tmp_path / "m.safetensors")


@FUZZ
@given(
    key=st.sampled_from(["model", "format_version", "parts", "data", "plugins"]),
    inner=st.sampled_from(
        [None, "input_shape", "latent_dim", "architecture", "likelihood", "architecture_options"]
    ),
    value=json_values | st.lists(st.integers(-(2**62), 2**62), min_size=3, max_size=3),
)
def test_hostile_model_descriptions(tmp_path, valid_file, key, inner, value):
    header, body = split(valid_file)
    description = json.loads(header["__metadata__"][FORMAT])
    if inner is not None and isinstance(description.get(key), dict):
        description[key][inner] = value
    else:
        description[key] = value
    header["__metadata__"][FORMAT] = json.dumps(description)
    loads_or_refuses(join(header, body), tmp_path / "m.safetensors")


@settings(
    max_examples=300,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(
    cut=st.integers(min_value=0), flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255)), max_size=4)
)
def test_vae_sample_on_damaged_files(tmp_path, valid_file, capsys, cut, flips):
    data = bytearray(valid_file[: cut % (len(valid_file) + 1)])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    path, out = tmp_path / "m.safetensors", tmp_path / "s.png"
    path.write_bytes(bytes(data))
    out.unlink(missing_ok=True)
    code = main(["sample", str(path), "--n", "4", "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    if code != 0:
        assert code == 1 and len(err) == 1 and err[0].startswith("vae: error: ") and "Traceback" not in err[0]
        assert not out.exists()


@pytest.mark.parametrize("version", [float("inf"), 2.5, "2", True, None, [2]])
def test_a_format_version_that_is_not_a_whole_number_is_refused(tmp_path, valid_file, version):
    """Hypothesis found infinity crashing int(); every non-integer must give the one-line error."""
    header, body = split(valid_file)
    model = json.loads(header["__metadata__"][FORMAT])
    model["format_version"] = version
    header["__metadata__"][FORMAT] = json.dumps(model)
    (tmp_path / "m.safetensors").write_bytes(join(header, body))
    with pytest.raises(VaeError, match="format_version must be a whole number"):
        load_model(tmp_path / "m.safetensors")


@pytest.mark.parametrize("version", [float("inf"), 2.5, "2", True])
def test_a_checkpoint_format_version_that_is_not_a_whole_number_is_refused(tmp_path, version):
    path = tmp_path / "checkpoint.safetensors"
    save_file(
        {"x": torch.zeros(1)},
        str(path),
        metadata={CHECKPOINT_FORMAT: json.dumps({"format_version": version})},
    )
    with pytest.raises(VaeError, match="format_version must be a whole number"):
        checkpoint_format_version(path)
