"""Pictures of a model: reconstruct, interpolate, traverse, map, plot, sample --temperature and
the pictures training writes. Every PNG is decoded and checked pixel by pixel against values
computed here through the model's own encoder and decoder (or numpy), never against the
picture code's output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors

from vaecli.cli import main
from vaecli.modelfile import load_model
from vaecli.plots import CURVE_PANELS, MAP_SIZE, PALETTE, PANEL_SIZE, TEST_COLOUR, TRAIN_COLOUR, Panel

CELL = 30  # 28-pixel MNIST images with torchvision's 2-pixel grid padding


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def cell(grid: np.ndarray, row: int, column: int) -> np.ndarray:
    """The 28x28 image in a torchvision grid of 28x28 images with 2-pixel padding."""
    top, left = 2 + row * CELL, 2 + column * CELL
    return grid[top : top + 28, left : left + 28].astype(int)


def grid_size(rows: int, columns: int) -> tuple[int, int]:
    return (columns * CELL + 2, rows * CELL + 2)


@pytest.fixture(scope="module")
def mnist_test(mnist_root) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test images (uint8 N x 28 x 28) and labels, read by torchvision directly."""
    from torchvision.datasets import MNIST

    data = MNIST(str(mnist_root), train=False, download=False)
    return data.data.numpy(), data.targets.numpy()


@pytest.fixture(scope="module")
def binary_digits(mnist_test, tmp_path_factory) -> list[Path]:
    """Five real digits thresholded to 0/255, saved as PNG: a Bernoulli model sees them as
    exactly pixel / 255 whatever the seed, so expected codes can be computed here."""
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for i in range(5):
        path = folder / f"digit-{i}.png"
        Image.fromarray(np.where(mnist_test[0][i] >= 128, 255, 0).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def model(small_run):
    return load_model(small_run, "cpu")[0]


def as_x(paths: list[Path]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(pixels(p).astype(np.float32) / 255.0)[None] for p in paths])


@torch.no_grad()
def expected_pixels(model, z: torch.Tensor) -> np.ndarray:
    """Bernoulli means of decode(z) as 8-bit pixels (N, 28, 28)."""
    probabilities = torch.sigmoid(model.decode(z)[:, 0, 0])
    return (probabilities * 255).round().numpy().astype(int)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level (float rounding at .5 may differ between batch sizes)."""
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1


# --- reconstruct --------------------------------------------------------------------------------


def test_reconstruct_files_shows_inputs_left_and_decoded_means_right(
    small_run, model, binary_digits, tmp_path, capsys
):
    out = tmp_path / "r.png"
    code, stdout, err = run(capsys, "reconstruct", small_run, *binary_digits, "--out", out, "--device", "cpu")
    assert code == 0, err
    assert stdout == "" and "5 images" in err
    assert Image.open(out).size == grid_size(5, 2)
    grid = pixels(out)
    with torch.no_grad():
        mu = model.encode(as_x(binary_digits))[0]
    expected = expected_pixels(model, mu)
    for i, path in enumerate(binary_digits):
        assert np.array_equal(cell(grid, i, 0), pixels(path).astype(int))
        assert close(cell(grid, i, 1), expected[i])
    assert not np.array_equal(cell(grid, 0, 1), cell(grid, 3, 1))  # a 7 and a 0 get different codes


def test_reconstruct_test_images_of_a_dataset(small_run, mnist_test, tmp_path, capsys):
    out = tmp_path / "r.png"
    code, _, err = run(capsys, "reconstruct", small_run, "--data", "mnist", "--n", "6", "--out", out)
    assert code == 0, err
    assert Image.open(out).size == grid_size(6, 2)
    grid = pixels(out)
    for i in range(6):
        assert np.array_equal(cell(grid, i, 0), mnist_test[0][i].astype(int))
    # the model's own dataset is the default
    default = tmp_path / "d.png"
    assert run(capsys, "reconstruct", small_run, "--n", "6", "--out", default)[0] == 0
    assert default.read_bytes() == out.read_bytes()


# --- interpolate --------------------------------------------------------------------------------


def test_interpolate_ends_are_the_decoded_means_and_the_middle_is_on_the_line(
    small_run, model, binary_digits, tmp_path, capsys
):
    a, b = binary_digits[0], binary_digits[1]
    out = tmp_path / "i.png"
    code, _, err = run(capsys, "interpolate", small_run, a, b, "--steps", "7", "--out", out)
    assert code == 0, err
    assert Image.open(out).size == grid_size(1, 7)
    grid = pixels(out)
    with torch.no_grad():
        mu = model.encode(as_x([a, b]))[0]
    ends = expected_pixels(model, mu)
    middle = expected_pixels(model, mu.mean(0, keepdim=True))[0]
    assert close(cell(grid, 0, 0), ends[0]) and close(cell(grid, 0, 6), ends[1])
    assert close(cell(grid, 0, 3), middle)
    assert not close(cell(grid, 0, 0), cell(grid, 0, 6))


def test_slerp_follows_the_great_circle(small_run, model, binary_digits, tmp_path, capsys):
    a, b = binary_digits[2], binary_digits[3]
    out = tmp_path / "s.png"
    code, _, err = run(capsys, "interpolate", small_run, a, b, "--steps", "5", "--slerp", "--out", out)
    assert code == 0, err
    with torch.no_grad():
        mu = model.encode(as_x([a, b]))[0].double().numpy()
    # Independent construction: an orthonormal basis (u, w) of the codes' plane, the direction
    # turned by t * angle from u towards w, the length interpolated linearly.
    u = mu[0] / np.linalg.norm(mu[0])
    w = mu[1] - (mu[1] @ u) * u
    w /= np.linalg.norm(w)
    angle = math.atan2(mu[1] @ w, mu[1] @ u)
    grid = pixels(out)
    linear = tmp_path / "l.png"
    assert run(capsys, "interpolate", small_run, a, b, "--steps", "5", "--out", linear)[0] == 0
    for k, t in enumerate(np.linspace(0, 1, 5)):
        length = (1 - t) * np.linalg.norm(mu[0]) + t * np.linalg.norm(mu[1])
        z = length * (math.cos(t * angle) * u + math.sin(t * angle) * w)
        expected = expected_pixels(model, torch.tensor(z, dtype=torch.float32)[None])[0]
        assert close(cell(grid, 0, k), expected)
    assert not close(cell(grid, 0, 2), cell(pixels(linear), 0, 2))  # not the straight line


def test_slerp_codes_against_a_rotation():
    from vaecli.pictures import interpolation_codes

    a, b = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 4.0])
    codes = interpolation_codes(a, b, 3, slerp=True)
    assert torch.allclose(codes[1], torch.tensor([3 * math.cos(math.pi / 4), 0.0, 3 * math.sin(math.pi / 4)]))
    assert torch.equal(codes[0], a) and torch.equal(codes[2], b)
    assert torch.allclose(interpolation_codes(a, b, 3)[1], torch.tensor([1.0, 0.0, 2.0]))
    opposite = interpolation_codes(a, -a, 3, slerp=True)  # no unique great circle: the line
    assert torch.allclose(opposite[1], torch.zeros(3))


def test_interpolate_between_dataset_indices(small_run, tmp_path, capsys):
    outs = [tmp_path / f"{n}.png" for n in range(3)]
    assert run(capsys, "interpolate", small_run, "mnist:3", "mnist:5", "--out", outs[0])[0] == 0
    assert run(capsys, "interpolate", small_run, "3", "5", "--data", "mnist", "--out", outs[1])[0] == 0
    assert run(capsys, "interpolate", small_run, "3", "6", "--out", outs[2])[0] == 0
    assert Image.open(outs[0]).size == grid_size(1, 10)
    assert outs[0].read_bytes() == outs[1].read_bytes() != outs[2].read_bytes()


# --- traverse -----------------------------------------------------------------------------------


def test_traverse_rows_sweep_one_dimension_each(small_run, model, tmp_path, capsys):
    out = tmp_path / "t.png"
    code, _, err = run(
        capsys, "traverse", small_run, "--dims", "0,3,5", "--steps", "6", "--range", "2", "--out", out
    )
    assert code == 0, err
    assert Image.open(out).size == grid_size(3, 6)
    grid = pixels(out)
    for row, dim in enumerate((0, 3, 5)):
        z = torch.zeros(6, 8)
        z[:, dim] = torch.tensor([-2.0, -1.2, -0.4, 0.4, 1.2, 2.0])
        expected = expected_pixels(model, z)
        for k in range(6):
            assert close(cell(grid, row, k), expected[k])


def test_traverse_picks_the_dimensions_with_the_highest_kl(small_run, tmp_path, capsys):
    out, named = tmp_path / "t.png", tmp_path / "n.png"
    code, _, err = run(capsys, "traverse", small_run, "--count", "3", "--steps", "4", "--out", out)
    assert code == 0, err
    assert Image.open(out).size == grid_size(3, 4)
    listed = [part.strip() for part in err.split("top to bottom:")[1].split(",")]
    dims = [int(item.split()[0][1:]) for item in listed]
    kls = [float(item.split("KL ")[1].rstrip(")")) for item in listed]
    assert kls == sorted(kls, reverse=True)
    code, _, err = run(capsys, "traverse", small_run, "--dims", ",".join(map(str, dims)), "--steps", "4",
                       "--out", named)  # fmt: skip
    assert code == 0, err
    assert named.read_bytes() == out.read_bytes()
    whole = tmp_path / "w.png"
    assert run(capsys, "traverse", small_run, "--out", whole)[0] == 0
    assert Image.open(whole).size == grid_size(8, 11)  # all 8 dimensions (fewer than 10), 11 steps


def test_kl_per_dimension_matches_torch_distributions(model, binary_digits):
    from torch.distributions import Normal, kl_divergence

    from vaecli.evaluation import kl_per_dimension, mean_elbo

    x = as_x(binary_digits)
    with torch.no_grad():
        mu, logvar = model.encode(x)
    reference = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).double().mean(0)
    found = kl_per_dimension(model, x, batch_size=2)
    assert found.shape == (8,)
    assert torch.allclose(found, reference, rtol=1e-5, atol=1e-6)
    assert found.sum().item() == pytest.approx(mean_elbo(model, x)["kl"], rel=1e-5)


# --- plot ---------------------------------------------------------------------------------------


def colour_mask(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(image[..., :3] == np.array(colour), axis=-1)


def test_plot_draws_train_and_test_series_where_their_values_are(small_run, tmp_path, capsys):
    out = tmp_path / "c.png"
    code, _, err = run(capsys, "plot", small_run, "--out", out)
    assert code == 0, err
    assert out.read_bytes() == (small_run / "curves.png").read_bytes()  # as training drew it
    picture = pixels(out)
    width, height = PANEL_SIZE
    assert picture.shape == (height, width * len(CURVE_PANELS), 3)
    rows = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()]
    for i, (_, key) in enumerate(CURVE_PANELS):
        left, top = i * width + Panel.MARGIN_LEFT, Panel.MARGIN_TOP
        right, bottom = (i + 1) * width - Panel.MARGIN_RIGHT, height - Panel.MARGIN_BOTTOM
        area = picture[top:bottom, left : left + (right - left) // 2]  # left of the legend
        heights = {}
        for split, colour in (("train", TRAIN_COLOUR), ("test", TEST_COLOUR)):
            mask = colour_mask(area, colour)
            assert mask.sum() > 20, (key, split)
            first_epoch = mask[:, :4]  # the epoch-1 marker sits on the left edge of the plot area
            assert first_epoch.any(), (key, split)
            heights[split] = np.nonzero(first_epoch)[0].mean()
        train, test = rows[0][f"train_{key}"], rows[0][f"test_{key}"]
        if abs(train - test) > 0.05 * max(abs(train), abs(test)):  # clearly apart: higher is drawn higher
            assert (heights["train"] < heights["test"]) == (train > test), key


def test_plot_accepts_the_metrics_file_and_old_runs_without_train_terms(small_run, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    rows = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        del row["train_reconstruction"], row["train_kl"]
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "c.png"
    assert run(capsys, "plot", old / "metrics.jsonl", "--out", out)[0] == 0
    picture = pixels(out)
    width = PANEL_SIZE[0]
    kl_panel = picture[:, 2 * width + Panel.MARGIN_LEFT : 2 * width + width // 2]
    assert colour_mask(kl_panel, TEST_COLOUR).sum() > 20
    assert colour_mask(kl_panel, TRAIN_COLOUR).sum() == 0  # no train KL recorded: no train line


# --- map ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_2d(mnist_root, tmp_path_factory) -> Path:
    from vaecli.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "two"
    config = TrainConfig(data_dir=str(mnist_root), epochs=1, limit_train=3000, limit_test=500, latent_dim=2,
                         arch_options={"hidden": "64"}, device="cpu", out=str(out))  # fmt: skip
    return train(config).run_dir


def plot_area(picture: np.ndarray) -> np.ndarray:
    from vaecli.plots import LEGEND_WIDTH

    bottom = picture.shape[0] - Panel.MARGIN_BOTTOM
    return picture[Panel.MARGIN_TOP + 1 : bottom, Panel.MARGIN_LEFT + 1 : picture.shape[1] - LEGEND_WIDTH]


@pytest.mark.parametrize("which", ["2d", "pca"])
def test_map_colours_points_by_label(which, run_2d, small_run, mnist_test, tmp_path, capsys):
    model_run = run_2d if which == "2d" else small_run
    out = tmp_path / "m.png"
    code, _, err = run(capsys, "map", model_run, "--n", "3000", "--out", out)
    assert code == 0, err
    assert ("PC1" in err) == (which == "pca")
    assert Image.open(out).size == MAP_SIZE
    area = plot_area(pixels(out))
    for label in range(10):
        assert colour_mask(area, PALETTE[label]).sum() > 30, label
    legend = pixels(out)[:, MAP_SIZE[0] - 90 :]
    assert all(colour_mask(legend, PALETTE[label]).any() for label in range(10))


def test_map_of_unlabelled_images_uses_one_colour(small_run, mnist_test, tmp_path, capsys):
    folder = tmp_path / "flat"
    for split, start in (("train", 0), ("test", 100)):
        (folder / split).mkdir(parents=True)
        for i in range(start, start + 40):
            Image.fromarray(mnist_test[0][i]).save(folder / split / f"{i}.png")
    out = tmp_path / "m.png"
    code, _, err = run(capsys, "map", small_run, "--data", f"folder:{folder}", "--out", out)
    assert code == 0, err
    area = plot_area(pixels(out))
    assert colour_mask(area, PALETTE[0]).sum() > 30
    assert not any(colour_mask(area, PALETTE[label]).any() for label in range(1, 10))


def test_pca_projection_matches_numpy():
    from vaecli.pictures import project_2d

    rng = np.random.default_rng(0)
    mu = (
        rng.normal(size=(500, 6))
        * np.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.1])
        @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    )
    points, names = project_2d(torch.tensor(mu, dtype=torch.float32))
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(mu.T))
    reference = (mu - mu.mean(0)) @ eigenvectors[:, ::-1][:, :2]
    for k in range(2):
        assert abs(np.corrcoef(points[:, k].numpy(), reference[:, k])[0, 1]) > 0.9999
        assert points[:, k].numpy().var(ddof=1) == pytest.approx(eigenvalues[::-1][k], rel=1e-4)
    share = eigenvalues[::-1] / eigenvalues.sum() * 100
    assert names == (f"PC1 ({share[0]:.0f}% of variance)", f"PC2 ({share[1]:.0f}% of variance)")


# --- sample --temperature -----------------------------------------------------------------------


def test_temperature_scales_the_prior_standard_deviation(small_run, tmp_path, capsys):
    codes = {}
    for t in ("1", "0.5"):
        out = tmp_path / f"{t}.safetensors"
        code, _, err = run(capsys, "sample", small_run, "--n", "4000", "--temperature", t, "--format",
                           "safetensors", "--out", out)  # fmt: skip
        assert code == 0, err
        codes[t] = load_safetensors(out.read_bytes())["z"]
    assert torch.allclose(codes["0.5"], 0.5 * codes["1"])
    assert codes["0.5"].std().item() == pytest.approx(0.5, rel=0.03)


# --- the same seed, the same file --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["reconstruct", "--n", "4", "--mode", "sample"],
        ["interpolate", "mnist:1", "mnist:2", "--mode", "sample"],
        ["traverse", "--dims", "1,2", "--mode", "sample"],
        ["map", "--n", "300"],
        ["sample", "--temperature", "0.7"],
    ],
)
def test_same_seed_same_bytes(small_run, tmp_path, capsys, argv):
    files = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        files[name] = tmp_path / f"{name}.png"
        code, _, err = run(capsys, argv[0], small_run, *argv[1:], "--seed", seed, "--out", files[name],
                           "--device", "cpu")  # fmt: skip
        assert code == 0, err
    data = {k: p.read_bytes() for k, p in files.items()}
    assert data["a"] == data["b"] != data["c"]


# --- bad input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_sizes(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sizes")
    a, b = folder / "a28.png", folder / "b32.png"
    Image.new("L", (28, 28)).save(a)
    Image.new("L", (32, 32)).save(b)
    return a, b


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (
            ["traverse", "{run}", "--dims", "0,99"],
            2,
            "no latent dimension 99: the model has dimensions 0 to 7",
        ),
        (["traverse", "{run}", "--dims", "0,x"], 2, "--dims wants comma-separated dimension numbers"),
        (["traverse", "{run}", "--dims", "-1"], 2, "no latent dimension -1"),
        (["traverse", "{run}", "--steps", "1"], 2, "--steps must be at least 2, got 1"),
        (["traverse", "{run}", "--range", "0"], 2, "--range must be a positive number"),
        (["traverse", "{run}", "--range", "nan"], 2, "--range must be a positive number"),
        (["traverse", "{run}", "--mode", "median"], 2, "no mode 'median'"),
        (["interpolate", "{run}", "{a}", "{b}"], 2, "A is 28x28 pixels but B is 32x32"),
        (["interpolate", "{run}", "mnist:1", "{b}"], 2, "A is 28x28 pixels but B is 32x32"),
        (["interpolate", "{run}", "mnist:1", "mnist:2", "--steps", "1"], 2, "--steps must be at least 2"),
        (["interpolate", "{run}", "nothing.png", "mnist:2"], 1, "A: no such image file: nothing.png"),
        (["interpolate", "{run}", "nothing", "mnist:2"], 2, "A 'nothing' is neither an image file"),
        (["interpolate", "{run}", "mnist:1", "mnist:10000"], 2, "index 10000 is outside the test set"),
        (["reconstruct", "{run}", "{a}", "--data", "mnist"], 2, "give image files or --data, not both"),
        (["reconstruct", "{run}", "--n", "0"], 2, "--n must be at least 1, got 0"),
        (["reconstruct", "{run}", "missing.png"], 1, "no such image file: missing.png"),
        (["reconstruct", "{tmp}"], 1, "no model at"),
        (["map", "{run}", "--n", "0"], 2, "--n must be at least 1, got 0"),
        (["sample", "{run}", "--temperature", "0"], 2, "--temperature must be a positive number, got 0.0"),
        (["sample", "{run}", "--temperature", "-1"], 2, "--temperature must be a positive number"),
        (["prior", "{run}"], 1, "the model's prior 'normal' is not a mixture: vae prior shows"),
        (["prior", "{run}", "--n", "0"], 2, "--n must be at least 1, got 0"),
        (["prior", "{run}", "--mode", "median"], 2, "no mode 'median'"),
        (["plot", "{tmp}"], 1, "no vaecli runs in"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    small_run, odd_sizes, tmp_path, capsys, argv, code, message
):
    places = {"run": small_run, "a": odd_sizes[0], "b": odd_sizes[1], "tmp": tmp_path}
    out = tmp_path / "out.png"
    got, _, err = run(capsys, *[a.format(**places) for a in argv], "--out", out)
    assert got == code, err
    assert message in one_line(err)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["reconstruct", "{run}", "--n", "2"],
        ["interpolate", "{run}", "mnist:1", "mnist:2"],
        ["traverse", "{run}", "--dims", "0"],
        ["map", "{run}", "--n", "50"],
        ["plot", "{run}"],
    ],
)
def test_existing_output_needs_force(small_run, tmp_path, capsys, argv):
    out = tmp_path / "there.png"
    out.write_bytes(b"keep me")
    args = [a.format(run=small_run) for a in argv]
    code, _, err = run(capsys, *args, "--out", out)
    assert code == 1
    assert f"{out} already exists; pass --force to replace it" in one_line(err)
    assert out.read_bytes() == b"keep me"
    code, _, err = run(capsys, *args, "--out", out, "--force")
    assert code == 0, err
    assert Image.open(out).format == "PNG"


def test_plot_of_damaged_metrics_is_one_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    code, _, err = run(capsys, "plot", tmp_path, "--out", tmp_path / "c.png")
    assert code == 1 and "line 2 is not JSON" in one_line(err)


# --- training's pictures ------------------------------------------------------------------------


def test_training_writes_reconstruction_grids_and_curves(small_run, mnist_test):
    for epoch in (1, 2):
        recon = small_run / "reconstructions" / f"epoch-{epoch:03d}.png"
        assert Image.open(recon).size == grid_size(16, 2)
        grid = pixels(recon)
        for i in range(16):
            assert np.array_equal(cell(grid, i, 0), mnist_test[0][i].astype(int))
    assert Image.open(small_run / "curves.png").size == (PANEL_SIZE[0] * len(CURVE_PANELS), PANEL_SIZE[1])
    rows = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["train_neg_elbo"] == pytest.approx(row["train_reconstruction"] + row["train_kl"])
        assert row["train_kl"] > 0 and row["train_reconstruction"] > 0
    assert rows[1]["train_neg_elbo"] < rows[0]["train_neg_elbo"]


def test_the_models_own_data_folder_is_the_fallback(small_run, mnist_test, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VAECLI_DATA_DIR")  # small_run recorded --data-dir, so its test set is found
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    out = tmp_path / "r.png"
    code, _, err = run(capsys, "reconstruct", small_run, "--n", "2", "--out", out)
    assert code == 0, err
    assert np.array_equal(cell(pixels(out), 1, 0), mnist_test[0][1].astype(int))


def test_png_to_stdout(small_run, tmp_path, capsysbinary):
    code = main(["traverse", str(small_run), "--dims", "1", "--steps", "3", "--out", "-"])
    out, _ = capsysbinary.readouterr()
    assert code == 0
    path = tmp_path / "t.png"
    path.write_bytes(out)
    assert Image.open(path).size == grid_size(1, 3)


@pytest.mark.parametrize(
    ("count", "channels", "nrow"),
    [(1, 1, None), (2, 3, None), (7, 1, 3), (10, 3, None), (5, 1, 8), (16, 3, 4)],
)
def test_image_grid_is_torchvisions_make_grid_layout(count, channels, nrow):
    from torchvision.utils import make_grid

    from vaecli.images import image_grid

    images = torch.rand(count, channels, 5, 7, generator=torch.Generator().manual_seed(count))
    square = max(1, math.isqrt(count - 1) + 1)
    expected = make_grid(images, nrow=nrow or square, padding=2)
    ours = image_grid(images, nrow)
    assert torch.equal(ours, expected[:channels])
