"""Image datasets, registered by name, and where their files live.

A dataset factory is called as ``factory(root, split, **options)`` with ``split`` "train" or
"test" and returns an :class:`ImageData`: all images as one uint8 tensor (N, C, H, W), so a
training loop can keep them on the device and index batches out of them.

- :mod:`~vaecli.datasets.base`: ImageData, data folders, loading by name, fetching files
- :mod:`~vaecli.datasets.idx`: MNIST's IDX format: mnist, fashion-mnist, kmnist, emnist
- :mod:`~vaecli.datasets.binarized`: Larochelle's binarized-mnist (.amat)
- :mod:`~vaecli.datasets.omniglot`: Burda's 28x28 omniglot (.mat)
- :mod:`~vaecli.datasets.cifar`: cifar10 (python batches, read without running any pickle)
- :mod:`~vaecli.datasets.svhn`: svhn (.mat); :mod:`~vaecli.datasets.matfiles` reads .mat files
- :mod:`~vaecli.datasets.celeba`: celeba (aligned JPEGs and the official split)
- :mod:`~vaecli.datasets.folder`: a folder of image files
"""

from vaecli.datasets.base import (
    DATA_DIR_ENV,
    SPLITS,
    ImageData,
    absolute_data_dir,
    check_shape,
    dataset_splits,
    default_data_dir,
    has_validation,
    load_dataset,
    model_data_dir,
    resolve_data_dir,
    suggest,
)
from vaecli.datasets.folder import folder
from vaecli.datasets.idx import MNIST_FILES, MNIST_SHA256, emnist, fashion_mnist, kmnist, mnist, read_idx

__all__ = [
    "DATA_DIR_ENV", "MNIST_FILES", "MNIST_SHA256", "SPLITS", "ImageData", "absolute_data_dir",
    "check_shape", "dataset_splits", "default_data_dir", "emnist", "fashion_mnist", "folder",
    "has_validation", "kmnist", "load_dataset", "mnist", "model_data_dir", "read_idx",
    "resolve_data_dir", "suggest",
]  # fmt: skip
