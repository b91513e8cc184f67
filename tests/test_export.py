"""`vae export`: ONNX files run by onnxruntime and torch.export programs give what vaecli gives
(`vae encode`'s codes, `vae sample --mode mean`'s images) for any batch size, and bad requests
write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vaecli import export as exporting
from vaecli.cli import main
from vaecli.modelfile import load_model, save_model
from vaecli.models import ModelSpec, build_model

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5  # what the issue asks of an exported program against vaecli's own outputs


def onnx_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_onnx_matches_vae_encode_and_vae_sample(small_run, mnist_root, tmp_path, capsys):
    from torchvision.datasets import MNIST

    digits = MNIST(str(mnist_root), train=False).data[:37]
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, digit in enumerate(digits):
        Image.fromarray(digit.numpy()).save(folder / f"{i:02d}.png")
    assert main(["encode", str(small_run), str(folder), "-o", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    assert main(["sample", str(small_run), "--n", "50", "--mode", "mean", "--format", "safetensors",
                 "--out", str(tmp_path / "samples.safetensors")]) == 0  # fmt: skip
    samples = load_file(tmp_path / "samples.safetensors")
    capsys.readouterr()

    assert main(["export", str(small_run), str(tmp_path / "onnx")]) == 0
    err = capsys.readouterr().err
    assert "wrote the encoder to" in err and "matches the model in onnxruntime" in err

    images = digits.unsqueeze(1).numpy()  # uint8 (37, 1, 28, 28): the files' pixels
    mu, logvar = onnx_run(tmp_path / "onnx" / "encoder.onnx", images)
    np.testing.assert_allclose(mu, codes["mu"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(logvar, codes["logvar"], rtol=0, atol=TOLERANCE)
    (decoded,) = onnx_run(tmp_path / "onnx" / "decoder.onnx", samples["z"].numpy())
    assert decoded.shape == (50, 1, 28, 28) and decoded.min() >= 0 and decoded.max() <= 1
    np.testing.assert_allclose(decoded, samples["images"].numpy(), rtol=0, atol=TOLERANCE)
    # One image at a time works too: the batch size is free.
    one_mu, _ = onnx_run(tmp_path / "onnx" / "encoder.onnx", images[:1])
    np.testing.assert_allclose(one_mu, codes["mu"][:1], rtol=0, atol=TOLERANCE)


def _saved_model(tmp_path: Path, spec: ModelSpec, mnist_root: Path) -> Path:
    """A model with fresh weights (what export does does not depend on training), its output
    offset fitted to real images, written as a model file."""
    from vaecli.datasets import mnist

    torch.manual_seed(0)
    model = build_model(spec)
    if spec.input_shape[0] == 1:
        model.start_from_data(mnist(mnist_root, "test").images[:500])
    path = tmp_path / "model.safetensors"
    save_model(path, model, {})
    return path


PARTS = [
    ModelSpec((1, 28, 28), 6, "conv", {"blocks": 1, "norm": "group"}, "gaussian", {"sigma": "pixel"}),
    ModelSpec((3, 20, 12), 4, "conv", {"channels": "8,16"}, "gaussian", {"sigma": "learned"}),
    ModelSpec((1, 28, 28), 5, "mlp", {"hidden": "64"}, "categorical", {"bins": 16}),
]


@pytest.mark.parametrize("spec", PARTS, ids=lambda s: f"{s.architecture}-{s.likelihood}-{s.input_shape[0]}ch")
def test_onnx_matches_the_model_for_other_parts(spec, tmp_path, mnist_root):
    path = _saved_model(tmp_path, spec, mnist_root)
    model, _ = load_model(path)
    written = exporting.export(path, tmp_path / "out", "onnx", "both")
    assert [w.part for w in written] == ["encoder", "decoder"]
    assert all(w.difference is not None and w.difference <= TOLERANCE for w in written)

    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (9, *spec.input_shape), generator=generator).to(torch.uint8)
    z = torch.randn(11, spec.latent_dim, generator=generator)
    with torch.no_grad():
        mu, logvar = model.encode(model.likelihood.encoder_input(images))
        mean = model.likelihood.mean(model.decode(z))
    got_mu, got_logvar = onnx_run(tmp_path / "out" / "encoder.onnx", images.numpy())
    np.testing.assert_allclose(got_mu, mu.numpy(), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(got_logvar, logvar.numpy(), rtol=0, atol=TOLERANCE)
    (got_mean,) = onnx_run(tmp_path / "out" / "decoder.onnx", z.numpy())
    np.testing.assert_allclose(got_mean, mean.numpy(), rtol=0, atol=TOLERANCE)

    about = {p.key: p.value for p in onnx.load(str(tmp_path / "out" / "encoder.onnx")).metadata_props}
    assert json.loads(about["input_shape"]) == list(spec.input_shape)
    assert about["latent_dim"] == str(spec.latent_dim) and about["likelihood"] == spec.likelihood


def test_torch_export_runs_with_and_without_grad_for_any_batch(small_run, tmp_path):
    model, _ = load_model(small_run)
    assert main(["export", str(small_run), str(tmp_path / "enc.pt2"), "--format", "torch-export",
                 "--part", "encoder"]) == 0  # fmt: skip
    decoder_argv = ["export", str(small_run), str(tmp_path), "--format", "torch-export", "--part", "decoder"]
    assert main(decoder_argv) == 0
    encoder = torch.export.load(tmp_path / "enc.pt2").module()
    decoder = torch.export.load(tmp_path / "decoder.pt2").module()
    for batch in (1, 5):
        images = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
        z = torch.randn(batch, model.latent_dim)
        with torch.no_grad():
            want_mu, _ = model.encode(model.likelihood.encoder_input(images))
            want_images = model.likelihood.mean(model.decode(z))
        mu, logvar = encoder(images)  # outside no_grad, as a user calls it
        assert mu.shape == logvar.shape == (batch, model.latent_dim)
        torch.testing.assert_close(mu, want_mu, rtol=0, atol=TOLERANCE)
        with torch.no_grad():
            torch.testing.assert_close(decoder(z), want_images, rtol=0, atol=TOLERANCE)


def test_prepared_input_takes_what_the_likelihood_prepares(small_run, tmp_path):
    model, _ = load_model(small_run)
    written = exporting.export(small_run, tmp_path / "e.onnx", "onnx", "encoder", input="prepared")
    assert written[0].path == tmp_path / "e.onnx"
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    prepared = model.likelihood.encoder_input(images)
    with torch.no_grad():
        want, _ = model.encode(prepared)
    got, _ = onnx_run(tmp_path / "e.onnx", prepared.numpy())
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=TOLERANCE)


def test_load_programs_in_python(small_run):
    encoder, decoder = exporting.load_programs(small_run)
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    mu, logvar = encoder(images)
    assert mu.shape == (3, 8) and decoder(mu).shape == (3, 1, 28, 28)
    model, _ = load_model(small_run)
    with torch.no_grad():
        want, _ = model.encode(model.likelihood.encoder_input(images))
    torch.testing.assert_close(mu, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "tflite"], "unknown --format 'tflite' (use onnx or torch-export)"),
        (["--part", "head"], "unknown --part 'head' (use encoder, decoder, both)"),
        (["--input", "float"], "unknown --input 'float' (use uint8 or prepared)"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(small_run, tmp_path, capsys, argv, message):
    assert main(["export", str(small_run), str(tmp_path / "out"), *argv]) == 2
    assert capsys.readouterr().err == f"vae: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_existing_files_need_force_and_a_file_is_no_folder(small_run, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "decoder.onnx").write_bytes(b"mine")
    assert main(["export", str(small_run), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        f"vae: error: {tmp_path / 'out' / 'decoder.onnx'} already exists; pass --force to replace it\n"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["decoder.onnx"]  # (no encoder either)
    (tmp_path / "file").write_text("x")
    assert main(["export", str(small_run), str(tmp_path / "file")]) == 2
    assert "is a file; --part both writes two files into a folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.onnx"), "--part", "encoder"]) == 1
    assert "no model at" in capsys.readouterr().err


def test_missing_packages_say_what_to_install(small_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(exporting, "_installed", lambda *modules: False)
    assert main(["export", str(small_run), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        "vae: error: --format onnx needs the packages onnx and onnxscript: pip install 'vaecli[export]'\n"
    )
    assert not (tmp_path / "out").exists()


class _DataDependent(torch.nn.Module):
    """An encoder whose control flow depends on the values: no tracer can export it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.inner(x)
        return self.inner(x) * 2


def test_an_unexportable_architecture_is_named_and_nothing_is_written(small_run, tmp_path, monkeypatch):
    model, header = load_model(small_run)
    model.encoder = _DataDependent(model.encoder)
    monkeypatch.setattr(exporting, "load_model", lambda path: (model, header))
    expected = r"^architecture 'mlp' \(vaecli [^)]*\) cannot be exported as torch-export: "
    with pytest.raises(exporting.VaeError, match=expected):
        exporting.export(small_run, tmp_path / "out", "torch-export", "both")
    assert not (tmp_path / "out").exists()


def test_a_program_that_differs_from_the_model_is_refused(small_run, tmp_path, monkeypatch):
    chosen = exporting.FORMATS["torch-export"]

    def wrong() -> exporting._Format:
        fmt = chosen()
        run = fmt.run
        fmt.run = lambda data, x: [t + 1e-2 for t in run(data, x)]
        return fmt

    monkeypatch.setitem(exporting.FORMATS, "torch-export", wrong)
    with pytest.raises(exporting.VaeError, match="the exported encoder differs from the model by 0.01"):
        exporting.export(small_run, tmp_path / "out", "torch-export", "both")
    assert not (tmp_path / "out").exists()
