"""What the shard writer reads: a sized, randomly addressable sequence of ``(key, image, label)`` samples.

``image`` is a PIL image, a uint8 array ``[H, W(, C)]``, or encoded bytes (stored as is when already in the
target format, e.g. JPEG files of an ImageFolder written as JPEG shards: no recompression). ``label`` is an int
in ``[0, len(class_names))`` or None (unlabelled). Random access (``source[i]``) lets an array-job task write
its range of shards without reading the samples before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Union, overload

import numpy as np
from PIL import Image

class FileBytes(bytes):
    """An image file's bytes that remember the file (``path``), so that a writer's error names the input that
    is broken, not the shard it was going into."""

    path: str

    def __new__(cls, data: bytes, path: str) -> FileBytes:
        self = super().__new__(cls, data)
        self.path = path
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # pickled to task-array workers: keep the path
        return (FileBytes, (bytes(self), self.path))


ImageLike = Union[Image.Image, np.ndarray, bytes]
Sample = tuple[str, ImageLike, Union[int, None]]


class SampleSource(Sequence[Sample]):
    """Base class of the sources; subclasses implement ``__len__``, ``_get(i)`` and ``describe()``."""

    #: short source name written to the manifest ("fashion_mnist", "imagefolder", "arrays")
    name: str = "samples"
    class_names: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, i: int) -> Sample:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the manifest's ``source`` field (identifies the input for reuse)."""
        return {"type": self.name, "num_samples": len(self)}

    def label_at(self, i: int) -> int | None:
        """The label of sample ``i`` (None: unlabelled). Sources override it to answer without reading the image."""
        return self[i][2]

    def balanced_subset(self, n: int) -> Sequence[Sample]:
        """``n`` samples spread over the classes as evenly as they allow, in source order.

        Class by class in turn, each class's next sample in source order (unlabelled samples form one more
        "class"), until ``n`` are taken; a class that runs out leaves its turns to the others. The first ``n``
        of a source sorted by class (an ImageFolder) would hold only its first classes.
        """
        if n >= len(self):
            return self
        by_class: dict[int | None, list[int]] = {}
        for i in range(len(self)):
            by_class.setdefault(self.label_at(i), []).append(i)
        queues = [iter(ids) for ids in by_class.values()]
        chosen: list[int] = []
        while len(chosen) < n:
            for q in list(queues):
                j = next(q, None)
                if j is None:
                    queues.remove(q)
                    continue
                chosen.append(j)
                if len(chosen) == n:
                    break
        return _Slice(self, sorted(chosen))

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Sample]: ...

    def __getitem__(self, i: int | slice) -> Sample | Sequence[Sample]:
        if isinstance(i, slice):
            return _Slice(self, range(len(self))[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample index {i} out of range for {n} samples")
        return self._get(i % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._get(i)


class _Slice(Sequence[Sample]):
    """The samples of ``src`` at the indices ``rng`` (a range, or any sequence of indices), in that order."""

    def __init__(self, src: SampleSource, rng: Sequence[int]) -> None:
        self._src, self._rng = src, rng

    def __len__(self) -> int:
        return len(self._rng)

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Sample]: ...

    def __getitem__(self, i: int | slice) -> Sample | Sequence[Sample]:
        if isinstance(i, slice):
            return _Slice(self._src, self._rng[i])
        return self._src[self._rng[i]]
