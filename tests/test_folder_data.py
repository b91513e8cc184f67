"""The built-in image-folder dataset, on real image files written here."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaecli.config import TrainConfig
from vaecli.datasets import folder
from vaecli.errors import UsageError, VaeError
from vaecli.imagefiles import UnreadableImage, find_images, read_image

VAE = str(Path(sys.executable).parent / "vae")


def write_zoo(base: Path) -> dict[str, Path]:
    """Images of every kind a user's folder holds, in class subfolders, plus three bad files."""
    rng = np.random.default_rng(0)
    files = {}
    (base / "cats" / "deeper").mkdir(parents=True)
    (base / "dogs").mkdir()
    files["grey"] = base / "cats" / "grey 28.png"
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(files["grey"])
    files["rgb_jpeg"] = base / "cats" / "deeper" / "colour-64.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB").save(files["rgb_jpeg"])
    files["rgba"] = base / "dogs" / "alpha.png"
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :15, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    files["palette"] = base / "dogs" / "palette-ünïcode.png"
    Image.fromarray(np.full((28, 28, 3), (0, 200, 0), dtype=np.uint8), "RGB").convert("P").save(
        files["palette"]
    )
    files["sixteen"] = base / "dogs" / "sixteen.png"
    Image.fromarray(np.full((28, 28), 65535 // 2 + 1, dtype=np.uint16)).save(files["sixteen"])
    (base / "dogs" / "empty.png").write_bytes(b"")
    (base / "dogs" / "notes.png").write_text("not an image\n")
    good = (base / "cats" / "grey 28.png").read_bytes()
    (base / "dogs" / "truncated.png").write_bytes(good[: len(good) // 2])
    return files


def test_read_image_handles_every_mode(tmp_path):
    files = write_zoo(tmp_path)
    grey = read_image(files["grey"], (1, 28, 28))
    assert grey.dtype == torch.uint8 and grey.shape == (1, 28, 28)
    assert torch.equal(grey[0], torch.from_numpy(np.array(Image.open(files["grey"]))))
    assert read_image(files["rgb_jpeg"], (1, 28, 28)).shape == (1, 28, 28)
    assert read_image(files["rgb_jpeg"], (3, 16, 24)).shape == (3, 16, 24)
    rgba = read_image(files["rgba"], (3, 20, 30))
    assert rgba[:, :, :14].tolist() == torch.tensor([255, 0, 0]).view(3, 1, 1).expand(3, 20, 14).tolist()
    assert rgba[:, :, 16:].max() == 0  # transparency is black
    palette = read_image(files["palette"], (1, 28, 28))
    assert palette.float().mean().item() == pytest.approx(0.587 * 200, abs=1.0)  # ITU-R 601 luma of green
    sixteen = read_image(files["sixteen"], (1, 28, 28))
    assert sixteen.unique().tolist() == [128]  # scaled from 16 bits, not clipped at 255
    for fit in ("stretch", "crop", "pad"):
        assert read_image(files["rgba"], (1, 10, 10), fit).shape == (1, 10, 10)
    padded = read_image(files["rgba"], (3, 30, 30), "pad")
    assert padded[:, :5].max() == 0  # the letterbox band is black
    for name, reason in (
        ("empty.png", "empty file"),
        ("notes.png", "not an image"),
        ("truncated.png", "truncated"),
    ):
        with pytest.raises(UnreadableImage, match=reason):
            read_image(tmp_path / "dogs" / name, (1, 28, 28))


def test_find_images_is_sorted_and_recursive(tmp_path):
    write_zoo(tmp_path)
    found = [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])]
    assert found[0] == "cats/grey 28.png" and found[1] == "cats/deeper/colour-64.jpg"
    assert found == [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])]
    assert len(found) == 8


def test_folder_dataset_splits_labels_and_skips_bad_files(tmp_path):
    write_zoo(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = folder(tmp_path, "train", str(tmp_path), test_fraction=0.4)
        test = folder(tmp_path, "test", str(tmp_path), test_fraction=0.4)
    skipped = sorted(str(w.message).split(":")[0] for w in caught)
    assert len(skipped) == 3 and all(s.startswith("skipping") for s in skipped)
    assert len(train) + len(test) == 5 and len(train) > 0 and len(test) > 0
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert set(train.labels.tolist() + test.labels.tolist()) == {0, 1}  # cats, dogs
    with pytest.warns(UserWarning, match="skipping"):
        again = folder(tmp_path, "train", str(tmp_path), test_fraction=0.4)
    assert torch.equal(again.images, train.images)  # the split is stable


def test_folder_dataset_uses_train_and_test_subfolders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(tmp_path / split / f"{i}.png")
    data = folder(tmp_path, "train", str(tmp_path), size="16x20", channels=3)
    assert data.images.shape == (3, 3, 16, 20) and data.labels is None
    assert len(folder(tmp_path, "test", str(tmp_path), size=16, channels=3)) == 2


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"size": "big"}, UsageError, "size wants N or HxW"),
        ({"channels": "2"}, UsageError, "1 (grey) or 3 (RGB)"),
        ({"fit": "squash"}, UsageError, "unknown fit 'squash'"),
        ({"test_fraction": "1.5"}, UsageError, "test_fraction must be in [0, 1)"),
        ({"test_fraction": "0"}, VaeError, "no readable images for the test split"),
    ],
)
def test_folder_dataset_bad_options(tmp_path, options, error, message):
    write_zoo(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            folder(tmp_path, "test", str(tmp_path), **options)


def test_data_names_that_are_paths_mean_the_folder_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    for given in ("folder:imgs", "./imgs", str(tmp_path / "imgs")):
        config = TrainConfig(data=given)
        assert config.data == "folder" and config.data_options["path"] == str(tmp_path / "imgs")
    assert TrainConfig(data="mnist").data == "mnist"


@pytest.mark.slow
def test_train_on_an_image_folder_through_the_cli(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(60):  # bright squares on black, at random places
        array = np.zeros((20, 20), dtype=np.uint8)
        y, x = rng.integers(0, 12, 2)
        array[y : y + 8, x : x + 8] = 255
        Image.fromarray(array, "L").save(tmp_path / f"square {i:02d}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    run = tmp_path / "run"
    argv = [VAE, "train", "--data", f"folder:{tmp_path}", "--data-opt", "size=16", "--data-opt",
            "test_fraction=0.2", "--epochs", "2", "--hidden", "32", "--latent-dim", "2",
            "--out", str(run)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run)
    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("vae: warning: skipping")]
    assert len(warning_lines) == 1 and "broken.png" in warning_lines[0]
    header = json.loads(
        subprocess.run(
            [sys.executable, "-c", f"import json; from vaecli.modelfile import read_header; "
             f"print(json.dumps(read_header({str(run / 'model.safetensors')!r})))"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert header["data"]["name"] == "folder" and header["data"]["shape"] == [1, 16, 16]
    assert header["data"]["options"]["path"] == str(tmp_path)

    missing = subprocess.run([VAE, "train", "--data", "folder:/no/such/dir", "--out", str(tmp_path / "r2")],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "is not a folder" in missing.stderr
    assert not (tmp_path / "r2").exists()


def _colour_squares(folder: Path, n: int, size: int = 32, grey_as_rgb: bool = False) -> None:
    """``n`` PNGs: a square of a random colour (or grey level) on black, at a random place."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(n):
        array = np.zeros((size, size, 3), dtype=np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        colour = rng.integers(60, 256, 3) if not grey_as_rgb else np.full(3, rng.integers(60, 256))
        array[y : y + size // 2, x : x + size // 2] = colour
        Image.fromarray(array, "RGB").save(folder / f"{i:03d}.png")


def test_a_colour_folder_trains_in_colour_by_default(tmp_path, capsys):
    """500 colour 32x32 PNGs and no options: 3 channels at 32x32, the gaussian likelihood, each
    choice said in one line; the samples are colour pictures."""
    from vaecli.cli import main
    from vaecli.modelfile import read_header

    _colour_squares(tmp_path / "photos", 500)
    run = tmp_path / "run"
    args = ["--epochs", "1", "--hidden", "64", "--latent-dim", "4", "--device", "cpu", "--out", str(run)]
    assert main(["train", "--data", str(tmp_path / "photos"), *args]) == 0
    err = capsys.readouterr().err.splitlines()
    photos = tmp_path / "photos"
    assert err[0] == (
        f"vae: folder {photos}: 500 images, taken as colour 32x32 (from the files; --data-opt "
        "channels=1|3 and --data-opt size=HxW choose otherwise)"
    )
    chosen = "likelihood gaussian, for 8-bit colour images, dequantised (--likelihood chooses another)"
    assert err[1] == f"vae: {chosen}"
    assert err[2].startswith("vae: warning: an epoch is only 2 steps (") and "--batch-size 384" in err[2]
    header = read_header(run / "model.safetensors")
    assert header["data"]["shape"] == [3, 32, 32] and header["model"]["likelihood"] == "gaussian"
    assert header["data"]["options"]["channels"] == 3 and header["data"]["options"]["size"] == "32x32"
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    picture = np.asarray(Image.open(tmp_path / "s.png"))
    assert picture.ndim == 3 and picture.shape[2] == 3
    assert np.abs(picture[..., 0].astype(int) - picture[..., 1]).max() > 10  # colour, not grey


def test_inferred_shapes_grey_as_rgb_large_images_and_given_options(tmp_path):
    from vaecli.training.run import complete_config

    _colour_squares(tmp_path / "grey", 20, grey_as_rgb=True)
    config = complete_config(TrainConfig(data=str(tmp_path / "grey")), tell=False)
    assert config.likelihood == "bernoulli" and config.data_options["channels"] == 1
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((100, 200, 3), dtype=np.uint8) + i * 80, "RGB").save(big / f"{i}.jpg")
    Image.fromarray(np.zeros((50, 50), dtype=np.uint8), "L").save(big / "odd one.png")
    config = complete_config(TrainConfig(data=str(big)), tell=False)
    assert config.data_options["size"] == "32x64"  # the most common size, its longer side cut to 64
    given = complete_config(
        TrainConfig(data=str(big), likelihood="categorical", data_options={"size": "28", "channels": "1"}),
        tell=False,
    )
    assert given.data_options["size"] == "28" and given.data_options["channels"] == "1"
    assert given.likelihood == "categorical"
    from vaecli.suggestions import suggest_folder

    told = suggest_folder(str(tmp_path / "not read"), size="28", channels="3")  # (nothing left to infer)
    assert told.likelihood == "gaussian" and told.options == {} and told.options_note is None
    sigma = TrainConfig(likelihood_options={"sigma": "learned"})
    assert complete_config(sigma, tell=False).likelihood == "gaussian"
    photos = complete_config(TrainConfig(data=str(big), likelihood_options={"bins": "16"}), tell=False)
    assert photos.likelihood == "categorical" and photos.data_options["size"] == "32x64"
    resumed = complete_config(TrainConfig(data=str(big)), tell=False, infer_options=False)
    assert "size" not in resumed.data_options and resumed.likelihood == "bernoulli"  # (grey in RGB)
    assert complete_config(TrainConfig(), tell=False).likelihood == "bernoulli"  # MNIST: binarised digits
