"""A tiny real data root for the stage tests: a few hundred Fashion-MNIST images in shards + 10%/50% keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simclr.data.fractions import write_label_fractions
from simclr.data.shards import write_shards
from simclr.data.sources import array_samples
from simclr.data.sources.fashion_mnist import DEFAULT_ROOT, fashion_mnist_samples

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 train + 100 test real Fashion-MNIST images (28x28 gray), shards of 64; fractions 10% and 50%."""
    if not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (make setup does it)")
    src = fashion_mnist_samples("test")
    root = tmp_path_factory.mktemp("fmnist_tiny")
    names = list(src.class_names)
    write_shards(array_samples(src.images[:240], src.labels[:240], names, key_prefix="tr"), root, split="train", max_count=64)
    write_shards(array_samples(src.images[240:340], src.labels[240:340], names, key_prefix="te"), root, split="test", max_count=64)
    write_label_fractions(root, fractions=(0.1, 0.5), seed=0)
    return root
