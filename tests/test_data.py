"""MNIST through the registry, the data folder's precedence, and missing data."""

import pytest
import torch

from vaecli import registry
from vaecli.datasets import DATA_DIR_ENV, default_data_dir, mnist, resolve_data_dir
from vaecli.errors import VaeError
from vaecli.likelihoods import Bernoulli, uniform_bytes_below_255
from vaecli.train import TEST_PREPARE_SEED, prepare_fixed


def test_mnist_matches_the_published_facts(mnist_root):
    train = registry.datasets.load("mnist")(mnist_root, "train")
    test = registry.datasets.load("mnist")(mnist_root, "test")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert train.images.double().mean().item() == pytest.approx(33.3184, abs=1e-4)


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(None) == default_data_dir() == tmp_path / "cache" / "vaecli" / "data"


def test_missing_mnist_without_network_says_where_files_go(tmp_path, no_network_mnist):
    root = tmp_path / "empty"
    with pytest.raises(VaeError) as info:
        mnist(root, "train")
    message = str(info.value)
    assert str(root / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "\n" not in message
    assert not root.exists()  # nothing half-made is left behind


def test_mnist_is_read_directly_and_equals_torchvision(mnist_root):
    from torchvision.datasets import MNIST

    for split in ("train", "test"):
        ours, theirs = mnist(mnist_root, split), MNIST(str(mnist_root), train=split == "train")
        assert torch.equal(ours.images[:, 0], theirs.data) and torch.equal(ours.labels, theirs.targets)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "is damaged: its header says 10000x28x28 values, so 7840016 bytes, but it has 7839916"),
        ("wrong magic", "is not an IDX file of 3-d bytes (magic number 0x00000801, expected 0x00000803)"),
        ("wrong count", "is damaged: its header says 9999x28x28 values"),
        ("random pixels", "is damaged: its checksum is not the published one"),
    ],
)
def test_damaged_mnist_files_are_named_and_not_read(tmp_path, mnist_root, no_network_mnist, damage, message):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((mnist_root / "MNIST" / "raw" / name).read_bytes())
    images = raw / "t10k-images-idx3-ubyte"
    data = images.read_bytes()
    damaged = {
        "truncated": data[:-100],
        "wrong magic": b"\x00\x00\x08\x01" + data[4:],
        "wrong count": data[:4] + (9999).to_bytes(4, "big") + data[8:],
        "random pixels": data[:16] + bytes(torch.randint(0, 256, (len(data) - 16,)).tolist()),
    }
    images.write_bytes(damaged[damage])
    with pytest.raises(VaeError) as info:
        mnist(tmp_path, "test")
    assert str(images) in str(info.value) and message in str(info.value)
    assert "delete it to download it again" in str(info.value)


def test_test_set_is_binarised_once_with_a_fixed_seed(mnist_root):
    images = mnist(mnist_root, "test").images[:500]
    a = prepare_fixed(Bernoulli(), images, TEST_PREPARE_SEED)
    b = prepare_fixed(Bernoulli(), images, TEST_PREPARE_SEED)
    assert torch.equal(a, b) and set(a.unique().tolist()) == {0.0, 1.0}
    # Dynamic binarisation: fresh draws differ, and their mean matches the grey levels.
    draws = torch.stack([Bernoulli().prepare(images) for _ in range(50)])
    assert not torch.equal(draws[0], draws[1])
    assert (draws.mean(0) - images.float() / 255).abs().mean() < 0.03


def test_builtins_come_through_entry_points():
    from importlib.metadata import entry_points

    for kind, group in registry.GROUPS.items():
        declared = {
            ep.name for ep in entry_points(group=group) if ep.dist and ep.dist.metadata["Name"] == "vaecli"
        }
        assert declared and declared <= set(registry.BY_KIND[kind].names())
    assert registry.datasets.entry("mnist").distribution == "vaecli"


def test_binarisation_probability_is_exactly_pixel_over_255():
    levels = torch.tensor([0, 1, 64, 128, 254, 255], dtype=torch.uint8)
    n = 200_000
    images = levels.repeat(n, 1)
    draws = Bernoulli().prepare(images, torch.Generator().manual_seed(3)).double()
    frequency, p = draws.mean(0), levels.double() / 255
    assert frequency[0] == 0 and frequency[-1] == 1  # never on for black, always on for white
    sigma = (p * (1 - p) / n).sqrt()
    assert ((frequency - p).abs()[1:-1] < 5 * sigma[1:-1]).all(), (frequency, p)


@pytest.mark.parametrize("wait_free", [False, True], ids=["cpu-way", "gpu-way"])
def test_binarisation_bytes_are_uniform_below_255_and_follow_the_seed(wait_free):
    n = 255 * 4000
    cpu = torch.device("cpu")
    u = uniform_bytes_below_255((n,), torch.Generator().manual_seed(5), cpu, wait_free)
    counts = torch.bincount(u.long(), minlength=256).double()
    assert u.dtype == torch.uint8 and counts[255] == 0  # every 255 byte was drawn again
    # Pearson's chi-square over the 255 values (254 degrees of freedom: mean 254, sd 22.5).
    chi2 = ((counts[:255] - n / 255) ** 2 / (n / 255)).sum().item()
    assert chi2 < 254 + 5 * 22.5, chi2
    again = uniform_bytes_below_255((n,), torch.Generator().manual_seed(5), cpu, wait_free)
    assert torch.equal(u, again)
    torch.manual_seed(7)  # without a generator: the global one, as training draws its batches
    a = Bernoulli().prepare(torch.full((3, 1, 5, 5), 128, dtype=torch.uint8))
    torch.manual_seed(7)
    b = Bernoulli().prepare(torch.full((3, 1, 5, 5), 128, dtype=torch.uint8))
    assert a.dtype == torch.float32 and torch.equal(a, b)
