"""simclr/data: the data layer, in three sub-packages.

- ``shards/``: the on-disk format of a split (WebDataset tar shards, key indexes, manifest, sample keys, image
  codec), its writing from the image sources in ``shards/sources/``, label-fraction key lists, and opening and
  checking a written split. Torch-free: the shard job never imports torch.
- ``loading/``: reading a split for training and evaluation: :class:`~simclr.data.loading.loader.ShardLoader`
  and the order of an epoch.
- ``augment/``: the SimCLR augmentations (per-sample PIL and batched tensor paths) and the evaluation transform.

Shared by all three: ``errors.py`` (the data errors; ``shards/`` and ``loading/`` raise them) and ``rng.py``
(counter-based random numbers: label-fraction choice, epoch order, view parameters).
This file imports nothing: import each name from the module that defines it.
"""
