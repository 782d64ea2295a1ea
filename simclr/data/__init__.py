"""simclr/data: shard writing and reading, label fractions, augmentations.

- Writing: :func:`write_shards` (``shards.py``) from the sources in ``sources/`` (Fashion-MNIST idx files,
  ImageFolder trees, arrays); :func:`write_label_fractions` (``fractions.py``).
- Reading: :class:`ShardLoader` (``loader.py``) over a checked split (``shardset.py``, ``manifest.py``).
- Augmentations: :class:`SimCLRAugment`, :class:`BatchedSimCLRAugment`, :class:`EvalTransform`,
  :func:`view_seed` (``augment.py``).
"""

import importlib
from typing import Any

# Attributes are imported on first use (PEP 562): the shard job and the fraction tools need neither torch nor
# torchvision, and importing torch costs seconds - "rerunning the demo's shard stage is instant".
_WHERE = {
    "BatchedSimCLRAugment": "simclr.data.augment.batched",
    "EvalTransform": "simclr.data.augment.simclr",
    "SimCLRAugment": "simclr.data.augment.simclr",
    "view_seed": "simclr.data.augment.simclr",
    "BadSampleError": "simclr.data.errors",
    "DataError": "simclr.data.errors",
    "ManifestError": "simclr.data.errors",
    "read_keys": "simclr.data.shards.fractions",
    "write_label_fractions": "simclr.data.shards.fractions",
    "ShardLoader": "simclr.data.loading.loader",
    "Manifest": "simclr.data.shards.manifest",
    "ShardInfo": "simclr.data.shards.manifest",
    "finalize_split": "simclr.data.shards.write",
    "write_shards": "simclr.data.shards.write",
    "ShardSet": "simclr.data.shards.shardset",
    "open_split": "simclr.data.shards.shardset",
    "array_samples": "simclr.data.shards.sources",
    "fashion_mnist_samples": "simclr.data.shards.sources",
    "imagefolder_samples": "simclr.data.shards.sources",
    "npz_samples": "simclr.data.shards.sources",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'simclr.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = [
    "BadSampleError",
    "BatchedSimCLRAugment",
    "DataError",
    "EvalTransform",
    "Manifest",
    "ManifestError",
    "ShardInfo",
    "ShardLoader",
    "ShardSet",
    "SimCLRAugment",
    "array_samples",
    "fashion_mnist_samples",
    "finalize_split",
    "imagefolder_samples",
    "npz_samples",
    "open_split",
    "read_keys",
    "view_seed",
    "write_label_fractions",
    "write_shards",
]
