"""A validation split, the dataset's own or the last N training images (`--data-opt val=N`): the
epoch's row is on it, so training never reads the test set; `vae eval --split val` scores it."""

from __future__ import annotations

import json

import pytest
import torch
from test_builtin_datasets import write_amat

from vaecli.cli import main
from vaecli.datasets import base, load_dataset
from vaecli.errors import UsageError
from vaecli.train import TrainConfig, train


def test_val_holds_out_the_last_training_images(mnist_root):
    full = load_dataset("mnist", "train", {}, mnist_root)
    train_part = load_dataset("mnist", "train", {"val": "5000"}, mnist_root)
    val = load_dataset("mnist", "val", {"val": "5000"}, mnist_root)
    assert len(train_part) == 55000 and len(val) == 5000
    assert torch.equal(torch.cat([train_part.images, val.images]), full.images)
    assert torch.equal(torch.cat([train_part.labels, val.labels]), full.labels)
    test = load_dataset("mnist", "test", {"val": "5000"}, mnist_root)
    assert torch.equal(test.images, load_dataset("mnist", "test", {}, mnist_root).images)
    assert len(load_dataset("mnist", "train", {"val": "5000"}, mnist_root, limit=100)) == 100


@pytest.mark.parametrize(
    "name, split, options, message",
    [
        ("mnist", "train", {"val": "0"}, "option val wants an integer of at least 1, got .0."),
        ("mnist", "train", {"val": "many"}, "option val wants an integer, got .many."),
        (
            "mnist",
            "val",
            {"val": "60000"},
            "--data-opt val=60000: dataset 'mnist' has only 60000 training images",
        ),
        (
            "mnist",
            "val",
            {},
            "dataset 'mnist' has no validation split: --data-opt val=N holds out its last N",
        ),
        (
            "binarized-mnist",
            "train",
            {"val": "10"},
            "has a validation split of its own: leave out --data-opt val",
        ),
    ],
)
def test_bad_validation_requests_are_one_line(mnist_root, name, split, options, message):
    with pytest.raises(UsageError, match=message):
        load_dataset(name, split, options, mnist_root)


def _splits_read(monkeypatch) -> list[str]:
    read: list[str] = []
    real = base._load_split

    def recording(name, split, options, root):
        read.append(split)
        return real(name, split, options, root)

    monkeypatch.setattr(base, "_load_split", recording)
    return read


@pytest.mark.slow
def test_training_with_val_reports_on_it_and_never_reads_the_test_set(mnist_root, tmp_path, monkeypatch):
    read = _splits_read(monkeypatch)
    small = {"latent_dim": 4, "arch_options": {"hidden": "32"}, "device": "cpu", "out": str(tmp_path / "run")}
    config = TrainConfig(
        data_dir=str(mnist_root), data_options={"val": "1000"}, epochs=2, limit_train=2000, **small
    )
    rows = train(config).metrics
    assert "test" not in read and set(read) == {"train"}  # (val is cut from train)
    assert all("val_neg_elbo" in r and not any(k.startswith("test_") for k in r) for r in rows)
    assert rows[1]["val_neg_elbo"] < rows[0]["val_neg_elbo"]
    curves = tmp_path / "run" / "curves.png"
    assert curves.is_file() and curves.stat().st_size > 0


@pytest.mark.slow
def test_a_dataset_with_its_own_val_split_reports_on_it_and_eval_scores_it(tmp_path, capsys):
    root = tmp_path / "data"
    generator = torch.Generator().manual_seed(0)
    for file, n in (("train", 300), ("valid", 60), ("test", 60)):
        bits = torch.randint(0, 2, (n, 28, 28), generator=generator)
        write_amat(root / "BinarizedMNIST" / f"binarized_mnist_{file}.amat", bits)
    run = tmp_path / "run"
    argv = ["train", "--data", "binarized-mnist", "--data-dir", str(root), "--epochs", "1", "--batch-size",
            "32", "--hidden", "16", "--latent-dim", "2", "--device", "cpu", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    assert "val -ELBO" in capsys.readouterr().err  # the row's header names its split
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert "val_neg_elbo" in row and "test_neg_elbo" not in row
    assert main(["eval", str(run), "--split", "val", "--k", "3", "--json", "--data-dir", str(root)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "val" and report["images"] == 60
    assert (run / "eval" / "val-k3.json").is_file()
