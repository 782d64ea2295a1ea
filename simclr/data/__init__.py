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
    "BatchedSimCLRAugment": "simclr.data.augment_batched",
    "EvalTransform": "simclr.data.augment",
    "SimCLRAugment": "simclr.data.augment",
    "view_seed": "simclr.data.augment",
    "BadSampleError": "simclr.data.errors",
    "DataError": "simclr.data.errors",
    "ManifestError": "simclr.data.errors",
    "read_keys": "simclr.data.fractions",
    "write_label_fractions": "simclr.data.fractions",
    "ShardLoader": "simclr.data.loader",
    "Manifest": "simclr.data.manifest",
    "ShardInfo": "simclr.data.manifest",
    "finalize_split": "simclr.data.shards",
    "write_shards": "simclr.data.shards",
    "ShardSet": "simclr.data.shardset",
    "open_split": "simclr.data.shardset",
    "array_samples": "simclr.data.sources",
    "fashion_mnist_samples": "simclr.data.sources",
    "imagefolder_samples": "simclr.data.sources",
    "npz_samples": "simclr.data.sources",
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
