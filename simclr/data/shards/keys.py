"""Sample keys: what a valid key is, and stable 64-bit hashes of keys.

A key names a sample everywhere: tar member names (``<key>.png``, ``<key>.cls``), label-fraction files (one key
a line), view seeds, error messages. WebDataset splits a member name at the first '.' of its file name, so a '.'
in a key's last part would merge samples (in its folder parts, ``a.b/c``, it is fine, as WebDataset allows);
whitespace would break the one-key-a-line files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from simclr.data.errors import BadSampleError

MAX_KEY_LEN = 200
_BAD = re.compile(r"[.\s\x00-\x1f\x7f\\]")
_BAD_ANYWHERE = re.compile(r"[\s\x00-\x1f\x7f\\]")


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid sample key, else raise :class:`BadSampleError` naming it."""
    if not isinstance(key, str) or not key:
        raise BadSampleError(f"sample key must be a non-empty str, got {key!r}")
    if len(key) > MAX_KEY_LEN:
        raise BadSampleError(f"sample key longer than {MAX_KEY_LEN} characters", key=key)
    m = _BAD_ANYWHERE.search(key)
    if m:
        raise BadSampleError(f"sample key contains {m.group()!r} (no whitespace, control chars or '\\')", key=key)
    if "." in key.rpartition("/")[2]:
        raise BadSampleError("sample key has a '.' in its last part (WebDataset would split the sample there)",
                             key=key)
    if key.startswith("/") or key.endswith("/") or "//" in key or any(p in (".", "..") for p in key.split("/")):
        raise BadSampleError("sample key must be a relative path without empty parts", key=key)
    return key


def sanitize_key(text: str) -> str:
    """Turn a file stem / relative path into a valid key: '.' and whitespace become '_'."""
    out = _BAD.sub("_", text.replace("\\", "/")).strip("/")
    return out[:MAX_KEY_LEN] or "_"


def key_hash(key: str, salt: int = 0) -> int:
    """A stable unsigned 64-bit hash of ``key`` (BLAKE2b; never Python's salted ``hash()``)."""
    msg = f"{salt}\x1f{key}".encode()
    return int.from_bytes(hashlib.blake2b(msg, digest_size=8).digest(), "little")


def key_hashes(keys: Iterable[str], salt: int = 0) -> npt.NDArray[np.uint64]:
    """:func:`key_hash` of each key, as a uint64 array."""
    return np.fromiter((key_hash(k, salt) for k in keys), dtype=np.uint64)
