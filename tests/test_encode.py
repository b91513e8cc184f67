"""`vae encode` and `vae decode` on real image files written here, with a really trained model."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from vaecli.cli import main
from vaecli.modelfile import load_model

VAE = str(Path(sys.executable).parent / "vae")
BAD = ("corrupt.png", "empty.png", "notes.png", "truncated.png")


class FakeStdin:
    """sys.stdin for in-process runs: a pipe (not a terminal) holding ``data``."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BufferedReader(io.BytesIO(data))

    def isatty(self) -> bool:
        return False

    def close(self) -> None:  # a DataLoader worker closes its stdin when it starts
        self.buffer.close()


def run(capsys, monkeypatch, *argv: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    monkeypatch.setattr(sys, "stdin", FakeStdin(stdin))
    stdout = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout, encoding="utf-8"))
    code = main(list(argv))
    sys.stdout.flush()
    _, err = capsys.readouterr()
    return code, stdout.getvalue(), err


def records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def mnist_digit(mnist_root: Path, i: int) -> np.ndarray:
    from torchvision.datasets import MNIST

    return MNIST(str(mnist_root), train=False).data[i].numpy()


def write_zoo(base: Path, mnist_root: Path) -> list[Path]:
    """Good images of every kind (in the order a sorted recursive search finds them) and bad files."""
    digits = [mnist_digit(mnist_root, i) for i in range(6)]
    (base / "a nested" / "deeper").mkdir(parents=True)
    (base / "b").mkdir()
    good = []

    def add(relative: str, image: Image.Image, **save: object) -> None:
        path = base / relative
        image.save(path, **save)
        good.append(path)

    add("a nested/grey 28.png", Image.fromarray(digits[0], "L"))
    add(
        "a nested/rgb-64.jpg",
        Image.fromarray(np.stack([digits[1]] * 3, -1), "RGB").resize((64, 64)),
        quality=95,
    )
    add(
        "a nested/deeper/rgba.png",
        Image.fromarray(np.stack([digits[2]] * 3 + [np.full((28, 28), 255, np.uint8)], -1), "RGBA"),
    )
    add("b/palette-ünïcode.png", Image.fromarray(digits[3], "L").convert("P"))
    add("b/sixteen.png", Image.fromarray(digits[4].astype(np.uint16) * 257))
    add("b/wide 40x20.png", Image.fromarray(np.pad(digits[5], ((0, 0), (6, 6))), "L").resize((40, 20)))
    (base / "b" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (base / "b" / "empty.png").write_bytes(b"")
    (base / "b" / "notes.png").write_text("a text file named .png\n")
    whole = (base / "a nested" / "grey 28.png").read_bytes()
    (base / "b" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return good


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, mnist_root) -> tuple[Path, list[Path]]:
    base = tmp_path_factory.mktemp("zoo")
    return base, write_zoo(base, mnist_root)


def test_encode_folder_in_order_and_reports_bad_files(small_run, zoo, capsys, monkeypatch):
    base, good = zoo
    code, out, err = run(capsys, monkeypatch, "encode", str(small_run), str(base), "--workers", "2")
    assert code == 1, err
    got = records(out)
    assert [r["path"] for r in got] == [str(p) for p in good], err  # sorted, recursive, in order
    assert all(
        len(r["mu"]) == 8 and len(r["logvar"]) == 8 and set(r) == {"path", "mu", "logvar"} for r in got
    )
    lines = err.strip().splitlines()
    skipped = [line for line in lines if line.startswith("vae: warning: skipping")]
    assert sorted(Path(line.split(": ")[2]).name for line in skipped) == sorted(BAD)
    reasons = {Path(line.split(": ")[2]).name: line.split(": ", 3)[3] for line in skipped}
    assert reasons["empty.png"] == "empty file" and reasons["notes.png"] == "not an image file"
    assert "truncated" in reasons["truncated.png"]
    assert lines[-1] == "vae: 4 of 10 files could not be encoded (exit code 1)"

    # The same files without the bad ones: exit 0 and the same codes, whatever the worker count.
    code, out_good, err = run(
        capsys, monkeypatch, "encode", str(small_run), *map(str, good), "--workers", "0"
    )
    assert code == 0 and err == ""
    again = records(out_good)  # the same codes up to float rounding (thread counts differ)
    assert [r["path"] for r in again] == [r["path"] for r in got]
    for a, b in zip(again, got, strict=True):
        assert a["mu"] == pytest.approx(b["mu"], abs=1e-5) and a["logvar"] == pytest.approx(
            b["logvar"], abs=1e-5
        )


def test_mu_equals_the_python_api_on_the_same_tensor(small_run, zoo, capsys, monkeypatch):
    base, good = zoo
    code, out, _ = run(capsys, monkeypatch, "encode", str(small_run), *map(str, good), "--batch-size", "4")
    assert code == 0
    model, _ = load_model(small_run)
    for record, path in zip(records(out), good, strict=True):
        image = Image.open(path)  # an independent preparation: PIL by hand, then /255 (bernoulli's mean)
        if image.mode == "I;16":
            image = Image.fromarray(
                (np.asarray(image, dtype=np.float64) / 65535 * 255 + 0.5).astype(np.uint8)
            )
        image = image.convert("RGBA").convert("L") if image.mode in ("RGBA", "P") else image.convert("L")
        image = image.resize((28, 28), Image.Resampling.LANCZOS) if image.size != (28, 28) else image
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).view(1, 1, 28, 28)
        with torch.no_grad():
            mu, logvar = model.encode(x)
        assert record["mu"] == pytest.approx(mu[0].tolist(), abs=1e-5), path
        assert record["logvar"] == pytest.approx(logvar[0].tolist(), abs=1e-5), path


def test_paths_from_stdin_lines_and_nul_separated_with_a_newline_in_a_name(
    small_run, tmp_path, mnist_root, capsys, monkeypatch
):
    odd = tmp_path / "two\nlines ✓.png"
    Image.fromarray(mnist_digit(mnist_root, 7), "L").save(odd)
    plain = tmp_path / "plain.png"
    Image.fromarray(mnist_digit(mnist_root, 8), "L").save(plain)
    listing = f"{plain}\0{odd}\0{tmp_path / 'missing.png'}\0".encode()
    code, out, err = run(
        capsys, monkeypatch, "encode", str(small_run), "-0", "--fields", "path,mu", stdin=listing
    )
    assert code == 1
    assert [r["path"] for r in records(out)] == [str(plain), str(odd)]
    assert set(records(out)[0]) == {"path", "mu"}
    assert (
        err.splitlines()[0] == f"vae: warning: skipping {tmp_path / 'missing.png'}: No such file or directory"
    )

    code, out, err = run(
        capsys, monkeypatch, "encode", str(small_run), "-", stdin=f"{plain}\n\n{plain}\n".encode()
    )
    assert code == 0 and err == "" and [r["path"] for r in records(out)] == [str(plain), str(plain)]


def test_output_formats_load_back_and_match_the_jsonl(small_run, zoo, tmp_path, capsys, monkeypatch):
    base, good = zoo
    files = [str(p) for p in good]
    common = ["encode", str(small_run), *files, "--sample", "--seed", "7", "--batch-size", "4"]
    code, out, err = run(capsys, monkeypatch, *common)
    assert code == 0, err
    reference = records(out)
    mu = np.array([r["mu"] for r in reference], dtype=np.float32)
    logvar = np.array([r["logvar"] for r in reference], dtype=np.float32)
    z = np.array([r["z"] for r in reference], dtype=np.float32)
    # z = mu + sigma * eps with eps from torch.Generator().manual_seed(7), batch by batch
    generator = torch.Generator().manual_seed(7)
    eps = torch.cat([torch.randn(4, 8, generator=generator), torch.randn(2, 8, generator=generator)]).numpy()
    np.testing.assert_allclose(z, mu + np.exp(0.5 * logvar) * eps, rtol=1e-5, atol=1e-6)
    code, again, _ = run(capsys, monkeypatch, *common)
    assert again == out  # the same seed gives the same z

    for name in ("codes.npy", "codes.safetensors", "codes.csv", "codes.jsonl"):
        code, stdout, err = run(capsys, monkeypatch, *common, "--output", str(tmp_path / name))
        assert code == 0 and stdout == b"" and err == f"wrote 6 codes to {tmp_path / name}\n"
    array = np.load(tmp_path / "codes.npy")
    assert array.shape == (6,) and array.dtype.names == ("mu", "logvar", "z")
    for key, want in (("mu", mu), ("logvar", logvar), ("z", z)):
        np.testing.assert_array_equal(array[key], want)
    tensors = load_file(tmp_path / "codes.safetensors")
    for key, want in (("mu", mu), ("logvar", logvar), ("z", z)):
        np.testing.assert_array_equal(tensors[key], want)
    with safe_open(str(tmp_path / "codes.safetensors"), "np") as f:
        assert f.metadata()["format"] == "vaecli-codes" and f.metadata()["count"] == "6"
    for sidecar in ("codes.npy.paths.jsonl", "codes.safetensors.paths.jsonl"):
        assert [json.loads(line) for line in (tmp_path / sidecar).read_text().splitlines()] == files
    table = np.loadtxt(
        tmp_path / "codes.csv", delimiter=",", skiprows=1, usecols=range(1, 25), encoding="utf-8"
    )
    np.testing.assert_array_equal(table.astype(np.float32), np.concatenate([mu, logvar, z], 1))
    header = (tmp_path / "codes.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["path", "mu_0", "mu_1"] and header[-1] == "z_7"
    assert records((tmp_path / "codes.jsonl").read_bytes()) == reference


def test_encode_decode_round_trip_through_a_shell_pipe(small_run, zoo, tmp_path, mnist_root):
    base, good = zoo
    twin = tmp_path / "other" / "grey 28.png"  # the same stem as a/grey 28.png: a collision
    twin.parent.mkdir()
    Image.fromarray(mnist_digit(mnist_root, 9), "L").save(twin)
    recon = tmp_path / "recon"
    vae, model_q = shlex.quote(VAE), shlex.quote(str(small_run))
    command = (
        f"{vae} encode {model_q} {shlex.quote(str(base))} {shlex.quote(str(twin))}"
        f" 2>/dev/null | {vae} decode {model_q} --out {shlex.quote(str(recon))}"
    )
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == f"wrote 7 images to {recon}\n"
    names = sorted(p.name for p in recon.iterdir())
    assert names == sorted([*(p.stem + ".png" for p in good), "grey 28-2.png"])
    # The decoder's mean of mu, computed here with torch: sigmoid of the decoder's logits.
    model, _ = load_model(small_run)
    x = torch.from_numpy(np.asarray(Image.open(twin), dtype=np.float32) / 255.0).view(1, 1, 28, 28)
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(model.encode(x)[0])[0, 0, 0]).numpy() * 255
    decoded = np.asarray(Image.open(recon / "grey 28-2.png"), dtype=np.float64)
    assert np.abs(decoded - expected).max() <= 0.5 + 1e-3

    grid = tmp_path / "grid.png"
    codes = shlex.quote(str(tmp_path / "c.npy"))
    command = f"{vae} encode {model_q} {shlex.quote(str(twin))} --sample -o {codes}"
    command += f" && {vae} decode {model_q} {codes} --latent z --grid {shlex.quote(str(grid))}"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert Image.open(grid).size == (28, 28)


def test_strict_stops_at_the_first_bad_file(small_run, zoo, tmp_path, capsys, monkeypatch):
    base, good = zoo
    listing = "\n".join([str(good[0]), str(base / "b" / "empty.png"), str(good[1])]).encode()
    code, out, err = run(capsys, monkeypatch, "encode", str(small_run), "--strict", stdin=listing)
    assert code == 1
    assert [r["path"] for r in records(out)] == [str(good[0])]  # what came before the failure
    assert err == f"vae: error: cannot read {base / 'b' / 'empty.png'}: empty file (stopped by --strict)\n"
    target = tmp_path / "strict.npy"
    code, _, _ = run(
        capsys, monkeypatch, "encode", str(small_run), "--strict", "-o", str(target), stdin=listing
    )
    assert code == 1 and list(tmp_path.iterdir()) == []  # nothing half-written


def test_existing_output_needs_force_and_a_missing_model_stops_first(
    small_run, zoo, tmp_path, capsys, monkeypatch
):
    base, good = zoo
    target = tmp_path / "codes.jsonl"
    target.write_text("keep me\n")
    code, out, err = run(capsys, monkeypatch, "encode", str(small_run), str(good[0]), "-o", str(target))
    assert code == 1 and err == f"vae: error: {target} already exists; pass --force to replace it\n"
    assert target.read_text() == "keep me\n"
    code, out, err = run(
        capsys, monkeypatch, "encode", str(small_run), str(good[0]), "-o", str(target), "--force"
    )
    assert code == 0 and records(target.read_bytes())[0]["path"] == str(good[0])
    fresh = tmp_path / "fresh.jsonl"
    code, out, err = run(
        capsys, monkeypatch, "encode", str(tmp_path / "nope"), str(good[0]), "-o", str(fresh)
    )
    assert code == 1 and err.count("\n") == 1 and "no model at" in err and not fresh.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--format", "xml"], "unknown --format 'xml'"),
        (["--workers", "-1"], "--workers must be 0"),
        (["--format", "npy"], "--format npy is a binary file: give --output FILE"),
        (["--fields", "mu,colour"], "unknown field 'colour'"),
        (["--fields", "mu,mu"], "names a field twice"),
        (["--fit", "squash"], "unknown --fit 'squash'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_encode_options_give_one_line_and_exit_2(small_run, zoo, capsys, monkeypatch, options, message):
    code, out, err = run(capsys, monkeypatch, "encode", str(small_run), str(zoo[1][0]), *options)
    assert code == 2 and out == b""
    assert err.count("\n") == 1 and message in err, err


def test_decode_bad_input(small_run, zoo, tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, "decode", str(small_run), stdin=b"{}\n")
    assert code == 2 and "give --out FOLDER" in err and err.count("\n") == 1
    code, out, err = run(capsys, monkeypatch, "encode", str(small_run), str(zoo[1][0]))
    assert code == 0
    good_line = out.decode()
    broken = good_line + "not json\n" + '{"path": "x.png"}\n' + good_line
    code, _, err = run(
        capsys, monkeypatch, "decode", str(small_run), "--out", str(tmp_path / "r"), stdin=broken.encode()
    )
    assert code == 1 and sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "grey 28-2.png",
        "grey 28.png",
    ]
    assert (
        "vae: warning: skipping line 2 of -:" in err and "vae: warning: skipping line 3 of -: no 'mu'" in err
    )
    code, _, err = run(
        capsys,
        monkeypatch,
        "decode",
        str(small_run),
        "--latent",
        "z",
        "--grid",
        str(tmp_path / "g.png"),
        stdin=out,
    )
    assert code == 1 and "the codes have no 'z'" in err and err.count("\n") == 1
    short = b'{"path": "a.png", "mu": [0.5, 0.5]}\n'
    code, _, err = run(
        capsys, monkeypatch, "decode", str(small_run), "--out", str(tmp_path / "s"), stdin=short
    )
    assert code == 1 and "latent size is 8" in err


def test_fit_follows_the_models_training_data_unless_given(small_run):
    from vaecli.encoding import ImageEncoder

    model, header = load_model(small_run)
    assert ImageEncoder(model, header, torch.device("cpu")).fit == "stretch"  # mnist: no fit option
    trained_with_pad = {**header, "data": {"name": "folder", "options": {"fit": "pad"}}}
    assert ImageEncoder(model, trained_with_pad, torch.device("cpu")).fit == "pad"
    assert ImageEncoder(model, trained_with_pad, torch.device("cpu"), fit="crop").fit == "crop"


def test_no_readable_image_still_gives_valid_empty_files(small_run, zoo, tmp_path, capsys, monkeypatch):
    base, _ = zoo
    bad = [str(base / "b" / name) for name in BAD]
    for name in ("none.npy", "none.safetensors"):
        code, _, err = run(capsys, monkeypatch, "encode", str(small_run), *bad, "-o", str(tmp_path / name))
        assert code == 1 and err.splitlines()[-1] == "vae: 4 of 4 files could not be encoded (exit code 1)"
    assert np.load(tmp_path / "none.npy").shape == (0,)
    assert load_file(tmp_path / "none.safetensors")["mu"].shape == (0, 8)
    assert (tmp_path / "none.npy.paths.jsonl").read_text() == ""


def test_jpeg_exif_orientation_is_applied(tmp_path):
    from vaecli.imagefiles import read_image

    stored = np.zeros((10, 30), dtype=np.uint8)
    stored[:, :15] = 255  # left half white as stored; orientation 6 means "rotate 90 degrees clockwise"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored, "L").save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100)
    upright = read_image(tmp_path / "phone.jpg", (1, 30, 10)).float()
    assert upright[0, :13].mean() > 240 and upright[0, 17:].mean() < 15  # white on top once upright
