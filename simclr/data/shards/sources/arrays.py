"""In-memory arrays as a sample source: ``images`` uint8 ``[N, H, W]`` or ``[N, H, W, C]`` (C = 1 or 3)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from simclr.data.errors import BadSampleError, DataError
from simclr.data.shards.keys import check_key
from simclr.data.shards.sources.base import Sample, SampleSource


class ArraySource(SampleSource):
    """Samples ``(f"{key_prefix}_{i:0Nd}", images[i], labels[i] or None)``."""

    name = "arrays"

    def __init__(
        self,
        images: npt.NDArray[np.uint8],
        labels: npt.ArrayLike | None = None,
        class_names: list[str] | None = None,
        key_prefix: str = "sample",
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
            raise ValueError(f"images must be [N, H, W] or [N, H, W, 1|3], got shape {images.shape}")
        n = images.shape[0]
        if labels is None:
            lab = np.full(n, -1, dtype=np.int64)
        else:
            lab = np.asarray(labels).astype(np.int64).reshape(-1)
            if lab.shape[0] != n:
                raise ValueError(f"labels has {lab.shape[0]} entries for {n} images")
        if class_names is None:
            class_names = [str(i) for i in range(int(lab.max(initial=-1)) + 1)]
        self.class_names = list(class_names)
        width = max(6, len(str(max(n - 1, 0))))
        self._fmt = f"{check_key(key_prefix)}_{{:0{width}d}}"
        bad = np.nonzero((lab < -1) | (lab >= len(self.class_names)))[0]
        if bad.size:
            i = int(bad[0])
            raise BadSampleError(
                f"label {lab[i]} outside the {len(self.class_names)} classes", key=self._fmt.format(i)
            )
        self.images = images
        self.labels = lab

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _get(self, i: int) -> Sample:
        label = int(self.labels[i])
        return self._fmt.format(i), self.images[i], (None if label < 0 else label)

    def label_at(self, i: int) -> int | None:
        label = int(self.labels[i])
        return None if label < 0 else label

    def describe(self) -> dict[str, Any]:
        h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        h.update(self.labels.tobytes())
        return {"type": self.name, "num_samples": len(self), "shape": list(self.images.shape), "sha256": h.hexdigest()}


def array_samples(
    images: npt.NDArray[np.uint8],
    labels: npt.ArrayLike | None = None,
    class_names: list[str] | None = None,
    key_prefix: str = "sample",
) -> ArraySource:
    """In-memory uint8 images (and optional int labels, -1 = unlabelled) as a :class:`SampleSource`."""
    return ArraySource(images, labels, class_names, key_prefix)


def npz_samples(path: str | Path, split: str, class_names: list[str] | None = None) -> ArraySource:
    """Arrays ``<split>_images`` / ``<split>_labels`` (or ``images`` / ``labels`` for any split) of an ``.npz``;
    an optional ``class_names`` array in the file names the classes."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read arrays: {e}", path=path) from e
    with z:
        img_name = f"{split}_images" if f"{split}_images" in z else "images"
        if img_name not in z:
            raise DataError(f"no array '{split}_images' (nor 'images'); has {sorted(z.files)}", path=path)
        lab_name = img_name.replace("images", "labels")
        labels = z[lab_name] if lab_name in z else None
        if class_names is None and "class_names" in z:
            class_names = [str(c) for c in z["class_names"]]
        return ArraySource(z[img_name], labels, class_names, key_prefix=split)
