"""An ImageNet-style folder: ``<root>/<class>/**/<image file>`` (torchvision ``ImageFolder`` layout).

Classes are the sorted sub-folder names (as torchvision; hidden ones skipped), or the class list given (the train
split's, so that every split numbers the classes alike: a split may lack a class, but a folder that is not in the
list is an error). An empty class folder is an error (it would shift every later class index). Files are taken in
sorted order, hidden files and folders skipped (so the sample order,
and with it the shard bytes, does not depend on the file system's listing order). The key of a sample is its
path relative to ``root`` without the extension, with '.' and whitespace replaced by '_' — readable, stable, and
unique unless two files differ only in those characters (then :class:`BadSampleError` names both files).
Images are passed on as file bytes: the writer stores them unchanged when already in the target format.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from simclr.data.errors import BadSampleError, DataError
from simclr.data.shards.keys import check_key, sanitize_key
from simclr.data.shards.sources.base import FileBytes, Sample, SampleSource

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderSource(SampleSource):
    """Samples ``(key, file bytes, class index)`` of an ImageFolder tree."""

    name = "imagefolder"

    def __init__(self, root: str | Path, class_names: list[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError("ImageFolder root is not a directory", path=self.root)
        found = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        defines = class_names is None  # this split's folders are the class list
        if class_names is None:
            class_names = found
        else:
            extra = sorted(set(found) - set(class_names))
            if extra:
                raise DataError(f"class folders {extra} are not among the classes {list(class_names)} (those of "
                                "the train split): their labels would mean other classes", path=self.root)
        if not class_names:
            raise DataError("no class sub-folders", path=self.root)
        self.class_names = list(class_names)
        self.files: list[tuple[str, Path, int]] = []
        seen: dict[str, Path] = {}
        per_class = [0] * len(self.class_names)
        for label, cls in enumerate(self.class_names):
            for dirpath, dirnames, filenames in os.walk(self.root / cls, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # .ipynb_checkpoints, ...
                for fn in sorted(filenames):
                    if fn.startswith(".") or not fn.lower().endswith(IMG_EXTENSIONS):
                        continue
                    path = Path(dirpath) / fn
                    rel = path.relative_to(self.root).with_suffix("")
                    key = check_key(sanitize_key(rel.as_posix()))
                    if key in seen:
                        raise BadSampleError(f"duplicate key from files {seen[key]} and {path}", path=path, key=key)
                    seen[key] = path
                    self.files.append((key, path, label))
                    per_class[label] += 1
        if not self.files:
            raise DataError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under the class folders", path=self.root)
        empty = [c for c, n in zip(self.class_names, per_class) if n == 0]
        if empty and defines:
            raise DataError(f"class folders {empty} hold no image file: remove them (every later class index "
                            "would shift)", path=self.root)

    def __len__(self) -> int:
        return len(self.files)

    def _get(self, i: int) -> Sample:
        key, path, label = self.files[i]
        try:
            return key, FileBytes(path.read_bytes(), str(path)), label
        except OSError as e:
            raise BadSampleError(f"unreadable image file: {e}", path=path, key=key) from e

    def label_at(self, i: int) -> int | None:
        return self.files[i][2]

    def describe(self) -> dict[str, Any]:
        # Size AND modification time: an edited image of a fixed-size format (PPM, BMP, raw TIFF) keeps its size,
        # and its stale shards were reused.
        h = hashlib.sha256()
        for key, path, label in self.files:
            st = path.stat()
            h.update(f"{key}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return {"type": self.name, "path": str(self.root), "num_samples": len(self), "listing_sha256": h.hexdigest()}


def imagefolder_samples(root: str | Path, class_names: list[str] | None = None) -> ImageFolderSource:
    """The images of an ImageFolder tree at ``root`` as a :class:`SampleSource`."""
    return ImageFolderSource(root, class_names)
