"""simclr/data/augment: the SimCLR augmentations and the evaluation transform (torch, PIL).

- ``simclr.py``: per-view seeds (:func:`~simclr.data.augment.simclr.view_seed`), the per-sample PIL path
  (:class:`~simclr.data.augment.simclr.SimCLRAugment`) and :class:`~simclr.data.augment.simclr.EvalTransform`.
- ``batched.py``: :class:`~simclr.data.augment.batched.BatchedSimCLRAugment`, a whole batch of uint8 images on
  CPU or CUDA, built from the per-sample tensor ops of ``image_ops.py``.
- ``params.py``: the random parameters of a view drawn from its seed, shared by both paths.

Imported by simclr.data.loading and benchmarks/. Imports nothing of simclr but simclr.data.rng (nothing of
simclr.data.shards or simclr.data.loading).
"""
