"""``ShardLoader``: batches from a shard split for one DDP rank — equal batch counts on every rank, an order that
is a pure function of (seed, epoch), exact mid-epoch resume without decoding the skipped samples.

How (see :mod:`simclr.data.loading.order` for the cutting rule):

- The loader owns the sample order (webdataset's ``split_by_node`` gives ranks unequal sample counts and cannot
  resume mid-epoch; FACTS.md): each epoch is a seeded permutation of the split's keys, padded or cut to a
  multiple of ``batch_size * world_size``; rank r takes its slice of every global batch.
- Step s of an epoch is computed from (epoch, s) alone, so ``epoch_iter(epoch, start_step)`` starts at s
  directly: nothing before it is read or decoded. Each step's batch is built by one worker (torch DataLoader,
  ``batch_size=None``) and batches come back in order, so the worker count never changes a result.
- Augmentation seeds are ``view_seed(seed, epoch, key, view)``: the same sample has the same views whichever
  rank, worker, batch or restart produces it.
- Samples are read with one ``pread`` each through the key index (no tar streaming, nothing loaded whole;
  small splits simply stay in the page cache).

Bad data: the split is checked when the loader is built (:func:`simclr.data.shards.shardset.open_split`): errors name
the shard and key. An image that fails to decode raises :class:`BadSampleError` naming shard and key, or, with
``bad_sample_budget > 0``, is replaced by a deterministic substitute sample (so batch shapes stay equal across
ranks), logged with its key, and counted in ``loader.bad_samples``; more distinct bad samples than the budget
is an error. In eval mode a substituted slot is marked ``valid=False`` / label -1 like padding: an evaluation
counts every readable sample once, never the substitute a second time. A worker that fails re-raises in the training process: never a hang, never a silent skip.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset

from simclr.data.augment.batched import BatchedSimCLRAugment
from simclr.data.augment.simclr import EvalTransform, SimCLRAugment, view_seed
from simclr.data.errors import BadSampleError, DataError
from simclr.data.loading.order import epoch_permutation, rank_batches, steps_per_epoch
from simclr.data.rng import mix
from simclr.data.shards.codec import decode_pil, decode_tensor
from simclr.data.shards.fractions import read_keys
from simclr.data.shards.shardset import ShardSet, Verify, open_split

log = logging.getLogger("simclr.data")

Mode = Literal["two_view", "labelled", "eval"]
MODES = ("two_view", "labelled", "eval")
Batch = dict[str, Any]


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class _EpochBatches(Dataset[Batch]):
    """The remaining batches of one epoch for one rank; item j is a pure function of its rows (picklable)."""

    def __init__(
        self,
        shards: ShardSet,
        rows: npt.NDArray[np.int64],
        valid: npt.NDArray[np.bool_],
        *,
        mode: str,
        seed: int,
        epoch: int,
        decode_mode: str,
        transform: SimCLRAugment | EvalTransform | BatchedSimCLRAugment,
        budget: int,
        raw: bool,
        clean: EvalTransform | None = None,
    ) -> None:
        self.shards = shards
        self.rows = rows
        self.valid = valid
        self.mode = mode
        self.seed = seed
        self.epoch = epoch
        self.decode_mode = decode_mode
        self.transform = transform
        self.budget = budget
        self.raw = raw  # return uint8 images + seeds; the training process augments (on its device)
        self.batched = isinstance(transform, BatchedSimCLRAugment)
        self.clean = clean  # labelled mode: also the un-augmented (evaluation-transformed) image

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def _decode(self, row: int, bad: list[tuple[str, str, str]]) -> tuple[int, Any, bool]:
        """Decode sample ``row``; with a budget, bad samples are replaced by a seeded substitute.

        Returns ``(row read, image, substituted)``."""
        r = row
        n = len(self.shards)
        attempt = 0
        while True:
            try:
                data = self.shards.read(r)
                img = decode_tensor(data, self.decode_mode) if self.batched else decode_pil(data, self.decode_mode)
                return r, img, attempt > 0
            except Exception as e:  # any failure to read or decode one sample makes it a bad sample
                err = e if isinstance(e, BadSampleError) else BadSampleError(
                    f"cannot decode the image: {type(e).__name__}: {e}", path=self.shards.shard_path(r), key=self.shards.keys[r]
                )
                bad.append((str(self.shards.shard_path(r).name), self.shards.keys[r], err.reason))
                if len(bad) > self.budget:
                    raise err from e
                attempt += 1
                r = mix(self.seed, self.epoch, row, attempt) % n

    def __getitem__(self, j: int) -> Batch:
        bad: list[tuple[str, str, str]] = []
        rows, keys, images, substituted = [], [], [], []
        for row in self.rows[j]:
            r, img, sub = self._decode(int(row), bad)
            rows.append(r)
            keys.append(self.shards.keys[r])
            images.append(img)
            substituted.append(sub)
        labels = torch.from_numpy(self.shards.labels[rows].astype(np.int64))
        valid = torch.from_numpy(self.valid[j].copy())
        if self.mode == "eval":
            # A substitute is another sample of the split, which the evaluation already counts in its own slot:
            # like padding, its slot does not count (training modes keep it: it only keeps batch shapes equal).
            valid &= ~torch.tensor(substituted, dtype=torch.bool)
        batch: Batch = {"key": keys, "valid": valid, "_bad": bad}
        if self.mode == "eval":
            labels = torch.where(valid, labels, torch.full_like(labels, -1))  # padded / substituted slots do not count
        batch["label"] = labels
        tf = self.transform
        if self.mode == "two_view":
            seeds = torch.tensor([[view_seed(self.seed, self.epoch, k, v) for k in keys] for v in (0, 1)])
            if self.raw:
                batch["_raw"] = _stack_if_same(images)
                batch["_seeds"] = seeds
            elif isinstance(tf, BatchedSimCLRAugment):
                both = _stack_if_same(images)
                both = both.repeat(2, 1, 1, 1) if isinstance(both, torch.Tensor) else both + both
                v = tf(both, seeds.reshape(-1))
                batch["view1"], batch["view2"] = v[: len(keys)], v[len(keys) :]
            else:
                assert isinstance(tf, SimCLRAugment)
                batch["view1"] = torch.stack([tf(im, int(s)) for im, s in zip(images, seeds[0])])
                batch["view2"] = torch.stack([tf(im, int(s)) for im, s in zip(images, seeds[1])])
        elif self.mode == "labelled":
            seeds = torch.tensor([view_seed(self.seed, self.epoch, k, 0) for k in keys])
            if self.raw:
                batch["_raw"] = _stack_if_same(images)
                batch["_seeds"] = seeds[None]
            elif isinstance(tf, BatchedSimCLRAugment):
                batch["image"] = tf(_stack_if_same(images), seeds)
            else:
                assert isinstance(tf, SimCLRAugment)
                batch["image"] = torch.stack([tf(im, int(s)) for im, s in zip(images, seeds)])
            if self.clean is not None:
                batch["clean"] = torch.stack([self.clean(im) for im in images])
        else:
            assert isinstance(tf, EvalTransform)
            batch["image"] = torch.stack([tf(im) for im in images])
        return batch


def _stack_if_same(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """One uint8 ``[B, C, H, W]`` tensor when all images share a size, else the list (cropped one by one)."""
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images)
    return images


class ShardLoader:
    """Batches of one split for one rank.

    Args:
        data_root, split: the split folder ``<data_root>/<split>`` written by :func:`simclr.data.shards.write.write_shards`.
        batch_size: per-rank batch size B.
        mode: "two_view" -> ``{"view1", "view2": float [B, C, size, size], "label": int64 [B] (-1 = unlabelled),
            "key": list[str], "valid": bool [B]}`` (pretraining, distillation); "labelled" -> ``{"image", "label",
            "key", "valid"}`` with the fine-tuning augmentation (crop + flip, no colour: official fine-tuning);
            "eval" -> ``{"image", ...}`` with the evaluation transform, padded slots labelled -1.
        with_clean: labelled mode only: each batch also has ``"clean"``, float ``[B, C, size, size]``: the same
            images through the evaluation transform (a distillation teacher labels the clean image while the
            student learns from the augmented one).
        rank, world_size: this process's DDP rank and the world size.
        num_workers: DataLoader worker processes (0 = in this process); never changes a result.
        seed: the run's data seed: order and augmentations are functions of (seed, epoch, key, view).
        size, strength, blur, min_area, out_channels: the augmentation (see :class:`SimCLRAugment`).
        keys_file: restrict to the keys listed in this file (a label fraction, e.g. ``1percent.txt``).
        labelled_only: keep only the samples with a label (>= 0), read from the shard index (nothing decoded):
            a supervised stage on a split that also holds unlabelled samples (STL-10 style), where "all labels"
            (no ``keys_file``) must mean all labelled samples, not -1 targets for the loss.
        drop_last: cut to whole global batches (default for two_view / labelled) or pad with repeats marked
            ``valid=False`` (default for eval, so an evaluation sees every sample exactly once).
        bad_sample_budget: distinct bad samples tolerated (skipped, logged, counted) before an error.
        batched_augment: decode to uint8 tensors and augment a whole batch at once (BatchedSimCLRAugment).
        augment_device: with batched_augment, ship uint8 images and augment them here on this device (e.g.
            "cuda"), in the training process; None = augment in the workers on CPU.
        verify: shard check at start, see :func:`simclr.data.shards.shardset.open_split`.
    """

    def __init__(
        self,
        data_root: str | Path,
        split: str,
        *,
        batch_size: int,
        mode: Mode = "two_view",
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        size: int = 32,
        strength: float = 0.5,
        blur: bool | None = None,
        keys_file: str | Path | None = None,
        labelled_only: bool = False,
        drop_last: bool | None = None,
        bad_sample_budget: int = 0,
        out_channels: int = 3,
        batched_augment: bool = False,
        augment_device: str | torch.device | None = None,
        min_area: float = 0.08,
        with_clean: bool = False,
        verify: Verify = "auto",
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        timeout_s: float = 0.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.batch_size = _positive_int("batch_size", batch_size)
        self.world_size = _positive_int("world_size", world_size)
        self.rank = _positive_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be < world_size, got rank={rank}, world_size={world_size}")
        self.num_workers = _positive_int("num_workers", num_workers, 0)
        self.bad_sample_budget = _positive_int("bad_sample_budget", bad_sample_budget, 0)
        self.seed = int(seed)
        self.mode = mode
        self.drop_last = (mode != "eval") if drop_last is None else bool(drop_last)
        if augment_device is not None and not batched_augment:
            raise ValueError("augment_device needs batched_augment=True")
        if augment_device is not None and mode == "eval":
            raise ValueError("augment_device applies to the two_view and labelled modes only")
        self.augment_device = None if augment_device is None else torch.device(augment_device)
        if with_clean and mode != "labelled":
            raise ValueError(f"with_clean applies to the labelled mode only, got mode={mode!r}")
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = _positive_int("prefetch_factor", prefetch_factor)
        self.timeout_s = float(timeout_s)

        shards = open_split(data_root, split, verify=verify, bad_sample_budget=self.bad_sample_budget)
        self._bad_keys: set[str] = {d.key for d in shards.dropped}
        self.bad_samples = len(shards.dropped)
        if keys_file is not None:
            wanted = read_keys(keys_file)
            rows, absent = shards.rows_of(wanted)
            missing = [k for k in absent if k not in self._bad_keys]
            if missing:
                raise DataError(f"{len(missing)} keys are not in split {split!r}, e.g. {missing[:3]}",
                                path=keys_file, key=missing[0])
            shards = shards.select(rows)
        if labelled_only:
            labelled = np.nonzero(shards.labels >= 0)[0].astype(np.int64)
            if labelled.size == 0:
                raise DataError(f"split {split!r} has no labelled samples (labelled_only)", path=shards.split_dir)
            if labelled.size < len(shards):  # all labelled: the same ShardSet, the same order as before
                shards = shards.select(labelled)
        self._shards = shards
        if len(shards) == 0:
            raise DataError("no samples to load", path=shards.split_dir)
        self._key_ids = shards.key_ids
        self._steps = steps_per_epoch(len(shards), self.batch_size, self.world_size, self.drop_last)
        if self._steps == 0:
            raise ValueError(
                f"batch_size * world_size = {self.batch_size * self.world_size} exceeds the {len(shards)} samples "
                f"of split {split!r} with drop_last=True: no batch per epoch"
            )
        self._decode_mode = shards.manifest.image_mode
        self.batched_augment = bool(batched_augment)
        transform: SimCLRAugment | EvalTransform | BatchedSimCLRAugment
        if mode == "eval":
            transform = EvalTransform(size, out_channels)
        else:
            color = mode == "two_view"
            kind = BatchedSimCLRAugment if batched_augment else SimCLRAugment
            transform = kind(size, strength, blur if color else False, min_area, out_channels, color)
        self.transform = transform
        # labelled mode with_clean: the evaluation transform of the same images, built once
        self._clean = EvalTransform(size, out_channels) if with_clean else None
        self._device_aug = (
            BatchedSimCLRAugment(size, strength, blur if mode == "two_view" else False, min_area, out_channels,
                                 mode == "two_view")
            if self.augment_device is not None
            else None
        )

    # -- the public surface the training loop uses -------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch on this rank — the same number on every rank."""
        return self._steps

    @property
    def num_samples(self) -> int:
        """Samples this loader draws from (after ``keys_file``, ``labelled_only`` and dropped bad samples)."""
        return len(self._shards)

    @property
    def class_names(self) -> list[str]:
        return self._shards.class_names

    @property
    def num_classes(self) -> int:
        return len(self._shards.class_names)

    @property
    def keys(self) -> list[str]:
        return list(self._shards.keys)

    def epoch_rows(self, epoch: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """``(rows [steps, B], valid [steps, B])``: which samples (indices into ``keys``) this rank gets."""
        perm = epoch_permutation(self._key_ids, self.seed, epoch)
        return rank_batches(perm, batch_size=self.batch_size, world_size=self.world_size, rank=self.rank,
                            drop_last=self.drop_last)

    def epoch_iter(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches ``start_step .. len(self)-1`` of ``epoch``; exactly those of an uninterrupted epoch."""
        epoch = _positive_int("epoch", epoch, 0)
        start_step = _positive_int("start_step", start_step, 0)
        if start_step > self._steps:
            raise ValueError(f"start_step {start_step} is past the {self._steps} batches of an epoch")
        rows, valid = self.epoch_rows(epoch)
        data = _EpochBatches(
            self._shards,
            rows[start_step:],
            valid[start_step:],
            mode=self.mode,
            seed=self.seed,
            epoch=epoch,
            decode_mode=self._decode_mode,
            transform=self.transform,
            budget=self.bad_sample_budget,
            raw=self._device_aug is not None,
            clean=self._clean,
        )
        if len(data) == 0:
            return
        if self.num_workers == 0:
            source: Iterator[Batch] = (data[j] for j in range(len(data)))
        else:
            source = iter(
                DataLoader(
                    data,
                    batch_size=None,
                    shuffle=False,
                    num_workers=self.num_workers,
                    pin_memory=self.pin_memory and torch.cuda.is_available(),
                    prefetch_factor=self.prefetch_factor,
                    timeout=self.timeout_s,
                    persistent_workers=False,
                )
            )
        try:
            for batch in source:
                yield self._finish(batch)
        finally:
            # Stop the workers now (an error, a break or a preemption mid-epoch), not whenever the garbage
            # collector gets to an iterator kept alive by a traceback.
            shutdown = getattr(source, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    # -- internals -----------------------------------------------------------------------------------------
    def _finish(self, batch: Batch) -> Batch:
        for shard, key, reason in batch.pop("_bad"):
            self.bad_samples += 1
            self._bad_keys.add(key)
            log.warning("skipped bad sample (counted, %d so far): shard %s, key %r: %s", self.bad_samples, shard, key,
                        reason)
            if len(self._bad_keys) > self.bad_sample_budget:
                raise BadSampleError(
                    f"{len(self._bad_keys)} distinct bad samples exceed bad_sample_budget={self.bad_sample_budget}: "
                    f"{sorted(self._bad_keys)[:5]}",
                    path=shard,
                    key=key,
                )
        if "_raw" in batch:
            assert self._device_aug is not None and self.augment_device is not None
            raw = batch.pop("_raw")
            seeds = batch.pop("_seeds")
            dev = self.augment_device
            x = raw.to(dev, non_blocking=True) if isinstance(raw, torch.Tensor) else [r.to(dev) for r in raw]
            if self.mode == "two_view":
                both = x.repeat(2, 1, 1, 1) if isinstance(x, torch.Tensor) else x + x
                v = self._device_aug(both, seeds.reshape(-1))
                b = seeds.shape[1]
                batch["view1"], batch["view2"] = v[:b], v[b:]
            else:
                batch["image"] = self._device_aug(x, seeds[0])
        return batch
