"""The dataset cache: an image folder is decoded once, then memory-mapped; a changed file, a
damaged cache or an unwritable cache folder gives a fresh decode, never wrong images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaecli import imagefiles
from vaecli.datasets import load_dataset
from vaecli.datasets.cache import CACHE_ENV


def write_folder(base: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        (base / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 8, 3), dtype=np.uint8)).save(
            base / f"class{i % 2}" / f"{i}.png"
        )


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """The image files decoded from now on."""
    seen: list[Path] = []
    real = imagefiles.read_image

    def counting(path, *args, **kwargs):
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(imagefiles, "read_image", counting)
    return seen


def _load(base: Path, split: str = "train"):
    options = {"path": str(base), "size": "6x5", "channels": "3", "test_fraction": "0.3"}
    return load_dataset("folder", split, options, base.parent)


def test_a_folder_is_decoded_once_then_memory_mapped(tmp_path, decodes, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_folder(tmp_path / "photos")
    first = _load(tmp_path / "photos")
    assert decodes and len(list((tmp_path / "cache").glob("folder-train-*.safetensors"))) == 1
    decodes.clear()
    second = _load(tmp_path / "photos")
    assert decodes == []  # nothing decoded: the images come from the cache
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    (cached,) = (tmp_path / "cache").glob("folder-train-*.safetensors")
    assert str(cached) in Path("/proc/self/maps").read_text()  # mapped, not read into memory
    monkeypatch.setenv(CACHE_ENV, "0")
    assert torch.equal(_load(tmp_path / "photos").images, first.images)  # the same as decoding afresh


def test_a_changed_added_or_removed_file_gives_a_fresh_decode(tmp_path, decodes, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    base = tmp_path / "photos"
    write_folder(base)
    before = _load(base)
    changed = sorted(base.rglob("*.png"))[0]
    Image.fromarray(np.zeros((10, 8, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # (a new time, whatever the clock's resolution)
    decodes.clear()
    after = _load(base)
    assert decodes and not torch.equal(before.images, after.images)
    (base / "class0" / "new.png").write_bytes(changed.read_bytes())
    decodes.clear()
    _load(base)
    assert decodes


def test_a_damaged_cache_is_warned_about_and_decoded_again(tmp_path, decodes, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_folder(tmp_path / "photos")
    good = _load(tmp_path / "photos", "test")
    (cached,) = (tmp_path / "cache").glob("folder-test-*.safetensors")
    cached.write_bytes(cached.read_bytes()[:-10])
    decodes.clear()
    with pytest.warns(UserWarning, match="ignoring the dataset cache .*: decoding the files again"):
        again = _load(tmp_path / "photos", "test")
    assert decodes and torch.equal(again.images, good.images)


def test_an_unwritable_cache_folder_is_no_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file" / "cache"))
    write_folder(tmp_path / "photos")
    assert _load(tmp_path / "photos").images.shape[1:] == (3, 6, 5)


def test_the_cache_keeps_labels_and_the_protocol(tmp_path, monkeypatch):
    from test_builtin_datasets import write_amat

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_amat(tmp_path / "BinarizedMNIST" / "binarized_mnist_test.amat", torch.randint(0, 2, (5, 28, 28)))
    first = load_dataset("binarized-mnist", "test", {"download": "false"}, tmp_path)
    second = load_dataset("binarized-mnist", "test", {"download": "false"}, tmp_path)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert torch.equal(first.images, second.images) and second.protocol == first.protocol
    assert second.labels is None
