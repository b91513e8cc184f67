"""How batches reach the step: the whole set on the device, or streamed from the host in a block
shuffle (vaecli.training.feeding), with the cache file read in blocks rather than mapped."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import TINY, one_error_line, run
from test_data_cache import write_folder

from vaecli.datasets import ImageData
from vaecli.datasets.cache import read_cache, write_cache
from vaecli.errors import VaeError
from vaecli.training import feeding
from vaecli.training.feeding import WINDOW_BLOCKS, DeviceFeed, StreamedFeed, should_stream

CPU = torch.device("cpu")


@pytest.fixture
def cached(tmp_path):
    """A dataset cache file of 1,000 random 3x8x8 images, read back memory-mapped."""
    images = torch.randint(
        0, 256, (1000, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    write_cache(tmp_path / "set.safetensors", ImageData(images, torch.arange(1000), "noise"))
    data = read_cache(tmp_path / "set.safetensors", "noise")
    assert data is not None and data.mapped is not None and torch.equal(data.images, images)
    return data


def small_blocks(monkeypatch, images: int) -> None:
    """Blocks of ``images`` 3x8x8 images, so a small set has many of them."""
    monkeypatch.setattr(feeding, "BLOCK_BYTES", images * 3 * 8 * 8)


def test_the_block_shuffle_visits_every_image_once_a_window_of_blocks_at_a_time(cached, monkeypatch):
    small_blocks(monkeypatch, 7)  # 143 blocks, the last one of 6 images
    feed = StreamedFeed(cached, CPU)
    order = feed.order()
    assert sorted(order.tolist()) == list(range(1000))
    start = 0
    while start < 1000:  # each window: the images of at most WINDOW_BLOCKS whole blocks
        blocks = set()
        stop = start
        while stop < 1000 and len(blocks | {order[stop].item() // 7}) <= WINDOW_BLOCKS:
            blocks.add(order[stop].item() // 7)
            stop += 1
        assert sum(min(7, 1000 - 7 * b) for b in blocks) == stop - start
        start = stop
    assert not torch.equal(order, feed.order())  # a fresh shuffle each epoch


def test_streamed_batches_are_the_images_of_the_order_read_from_the_file(cached, monkeypatch):
    small_blocks(monkeypatch, 7)
    reads = []
    real = feeding.BlockReader.__call__
    monkeypatch.setattr(
        feeding.BlockReader, "__call__", lambda self, a, b: reads.append((a, b)) or real(self, a, b)
    )
    for data in (cached, cached.rows(slice(300, None)), cached.rows(slice(None, 901))):  # (offsets kept)
        feed = StreamedFeed(data, CPU)
        order = feed.order()
        batches = list(feed.batches(order, 64, start=3))
        assert len(batches) == -(-len(data) // 64) - 3
        expected = data.images.index_select(0, order[3 * 64 :])
        assert torch.equal(torch.cat([batch.images() for batch in batches]), expected)
        assert all(batch.indices is None and batch.size == len(batch.source) for batch in batches)
    # Each block is read once an epoch (a window's blocks stay while its batches are gathered).
    assert len(reads) <= sum(-(-n // 7) for n in (1000, 700, 901))
    assert all(b - a <= 7 for a, b in reads)


def test_device_batches_leave_the_gather_to_the_step(cached):
    # (so that a step compiled on CUDA holds the gather in its graph: the batch is the whole set
    # on the device and the batch's indices, and the images are gathered only when asked)
    images = cached.images.clone()
    feed = DeviceFeed(images, CPU)
    order = feed.order()
    batches = list(feed.batches(order, 300, start=1))
    assert [batch.size for batch in batches] == [300, 300, 100]
    assert all(batch.source is feed.images for batch in batches)
    assert torch.equal(torch.cat([batch.images() for batch in batches]), images[order[300:]])
    first = feed.first_batch(40)
    assert first.size == 40 and torch.equal(first.images(), images[:40])


def test_the_cache_file_is_read_not_mapped_and_a_short_file_is_one_error(cached, tmp_path):
    with feeding.BlockReader(cached) as read:
        assert torch.equal(read(10, 20), cached.images[10:20])
        assert read.file is not None and read.file.name == cached.mapped[0]
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 1000)
    broken = ImageData(cached.images, None, "noise", mapped=(str(short), 0))
    with pytest.raises(VaeError, match="short.bin ended early"):
        list(StreamedFeed(broken, CPU).batches(torch.arange(1000), 100))


def test_stopping_early_ends_the_reader(cached):
    feed = StreamedFeed(cached, CPU)
    batches = feed.batches(feed.order(), 10)
    next(batches)
    batches.close()  # (the loop's `closing`: an error or a stop mid-epoch)
    assert all(thread.name != feeding.READER_NAME for thread in threading.enumerate())


def test_auto_streams_only_what_does_not_fit(cached, monkeypatch):
    in_memory = ImageData(cached.images.clone(), None, "noise")
    monkeypatch.setattr(feeding, "host_memory_free", lambda: 10 << 30)
    assert not should_stream("auto", cached, CPU) and should_stream("on", cached, CPU)
    monkeypatch.setattr(feeding, "host_memory_free", lambda: 100_000)  # 192,000 bytes of images
    assert should_stream("auto", cached, CPU) and not should_stream("off", cached, CPU)
    assert not should_stream("auto", in_memory, CPU)  # already in memory: nothing to gain on a CPU
    assert feeding.stream_note(cached, CPU).startswith("the training images (0.00 GiB) are more than half")
    assert 0 < feeding.host_memory_free() and isinstance(
        DeviceFeed(in_memory.images, CPU).order(), torch.Tensor
    )


def test_training_streamed_from_a_cached_folder_and_from_memory(tmp_path, in_tmp, capsys, monkeypatch):
    monkeypatch.setenv("VAECLI_DATA_CACHE", str(tmp_path / "cache"))
    write_folder(tmp_path / "photos", 40)
    data = f"folder:{tmp_path / 'photos'}"
    common = ["--epochs", "2", "--batch-size", "8", "--arch-opt", "hidden=16", "--latent-dim", "2", "--quiet"]
    from_file = []
    real = feeding.BlockReader.__call__
    monkeypatch.setattr(
        feeding.BlockReader,
        "__call__",
        lambda self, a, b: from_file.append(self.file is not None) or real(self, a, b),
    )
    for out in ("first", "second"):  # the first run writes the cache, the second reads it in blocks
        from_file.clear()
        argv = ["--data", data, "--data-opt", "size=8x8", *common, "--stream", "on", "--out", out]
        code, _, err = run(capsys, "train", *argv)
        assert code == 0, err
        assert from_file and all(from_file) == (out == "second")
    rows = [json.loads(line) for line in (in_tmp / "second" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(row["test_neg_elbo"]) for row in rows)
    code, _, err = run(capsys, "train", *TINY, "--stream", "on", "--out", "mnist")  # MNIST: from memory
    assert code == 0, err


def test_a_bad_stream_setting_is_one_line(in_tmp, capsys):
    code, _, err = run(capsys, "train", *TINY, "--stream", "sometimes")
    assert (
        code == 2 and one_error_line(err) == "vae: error: --stream: unknown 'sometimes' (use auto, on, off)"
    )
    assert not (in_tmp / "runs").exists()


def test_a_streamed_run_stopped_mid_epoch_resumes_to_the_same_weights(mnist_root, tmp_path, monkeypatch):
    from test_objectives import same_weights
    from test_runs import SignalAt

    from vaecli.train import TrainConfig, TrainingInterrupted, train

    monkeypatch.setattr(feeding, "BLOCK_BYTES", 16 * 784)  # (MNIST: blocks of 16 images, 5 windows)

    def config(out):
        return TrainConfig(data_dir=str(mnist_root), epochs=2, limit_train=1200, limit_test=200,
                           stream="on", arch_options={"hidden": "32"}, latent_dim=4, device="cpu",
                           out=str(out))  # fmt: skip

    train(config(tmp_path / "straight"))
    with pytest.raises(TrainingInterrupted):
        train(config(tmp_path / "run"), SignalAt(2, 2))
    train(config(tmp_path / "run"), resume=True)
    assert same_weights(tmp_path / "straight", tmp_path / "run")


def test_the_memory_free_counts_a_cgroup_limit_on_the_process_or_above_it(tmp_path, monkeypatch):
    for name, limit, usage in (("own", "max", 0), ("parent", str(3 << 30), 1 << 30)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "memory.max").write_text(limit + "\n")
        (tmp_path / name / "memory.current").write_text(f"{usage}\n")
    folders = [
        (tmp_path / "own", "memory.max", "memory.current"),
        (tmp_path / "parent", "memory.max", "memory.current"),
    ]
    unlimited = feeding.host_memory_free()
    monkeypatch.setattr(feeding, "_cgroup_folders", lambda: iter(folders))
    assert feeding.host_memory_free() == min(unlimited, 2 << 30)  # the parent's 3 GiB, 1 GiB of it used
    # On this machine: the folders /proc/self/cgroup names, the process's own group first.
    monkeypatch.undo()
    own = next(feeding._cgroup_folders(), None)
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    line = next((text for text in lines if ":memory:" in text or text.startswith("0::")), None)
    assert (own is None) == (line is None)
    if own is not None:
        assert str(own[0]).endswith(line.split(":", 2)[2].rstrip("/"))


def resident_bytes_of_mapping(address: int) -> int:
    """The Rss of the mapping in /proc/self/smaps that holds ``address`` (the kernel's count)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        span = line.split(" ", 1)[0]
        if "-" in span and all(c in "0123456789abcdef-" for c in span):
            low, high = (int(v, 16) for v in span.split("-"))
            if low <= address < high:
                rss = next(x for x in lines[i + 1 :] if x.startswith("Rss:"))
                return int(rss.split()[1]) * 1024
    raise AssertionError("no mapping holds the address")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_the_start_pass_over_a_mapped_cache_leaves_its_pages_unresident(tmp_path, monkeypatch):
    from vaecli import likelihoods

    images = torch.randint(0, 256, (4096, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator())
    write_cache(tmp_path / "set.safetensors", ImageData(images, None, "noise"))  # 16 MiB of images
    monkeypatch.setattr(likelihoods.base, "DATASET_CHUNK_BYTES", 8 * 64 * 64 * 128)  # chunks of 512 KiB
    mapped = read_cache(tmp_path / "set.safetensors", "noise").images
    address = mapped.data_ptr()
    mean, variance = likelihoods.pixel_moments(mapped)  # every page read once
    assert torch.allclose(mean, images.double().mean(0)) and torch.allclose(
        variance, images.double().var(0, unbiased=False)
    )
    assert resident_bytes_of_mapping(address) <= 1 << 20  # at most about a chunk still resident
    fit = likelihoods.Categorical().constant_fit(mapped)  # the other pass through dataset_chunks
    assert fit.shape[1:] == (1, 64, 64) and resident_bytes_of_mapping(address) <= 1 << 20
    assert int(mapped.sum()) == int(images.sum())  # the same reads without handing pages back:
    assert resident_bytes_of_mapping(address) >= 15 << 20  # the whole set resident
