"""Image bytes <-> pixels: format sniffing, deterministic encoding, and two decoders (PIL and torchvision).

Encoding is deterministic for a given Pillow/zlib/libjpeg build (fixed PNG compression level, fixed JPEG
quality and no optimisation pass), which is what makes the shards byte-reproducible. Decoding into tensors uses
torchvision's libpng/libjpeg ops (about 2x faster than PIL on small PNGs and on JPEGs, measured here), decoding into PIL images
uses PIL; both raise on corrupt data and the caller adds the shard and key to the message.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

ImageFormat = Literal["png", "jpeg"]
FORMATS: tuple[str, ...] = ("png", "jpeg")
EXTENSION = {"png": "png", "jpeg": "jpg"}
PNG_COMPRESS_LEVEL = 6
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# Integer grey modes wider than 8 bits (16-bit PNG/TIFF: microscopy, medical): taken as 16-bit and scaled.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L")


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit grey image scaled to 8 bits (PIL's own ``convert("L")`` clips at 255: nearly all white)."""
    if img.mode not in _WIDE_MODES:
        return img
    a = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")




def sniff_format(data: bytes) -> str | None:
    """``"png"`` / ``"jpeg"`` from the magic bytes, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def check_format(image_format: str) -> str:
    fmt = image_format.lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"image_format must be one of {FORMATS}, got {image_format!r}")
    return fmt


def to_storable(img: Image.Image, image_format: str) -> Image.Image:
    """The image in a mode the format stores losslessly and the loader reads: L or RGB."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in _WIDE_MODES:
        return _to_8bit(img)
    if img.mode in _GRAY_MODES:
        return img.convert("L")
    return img.convert("RGB")  # palette, alpha, CMYK, YCbCr ...: alpha is dropped


def encode_image(img: Image.Image | np.ndarray, image_format: str, *, jpeg_quality: int = 95) -> bytes:
    """Encode ``img`` (PIL image, or uint8 array ``[H, W]`` / ``[H, W, 1|3]``) as PNG or JPEG bytes."""
    fmt = check_format(image_format)
    if isinstance(img, np.ndarray):
        img = array_to_pil(img)
    img = to_storable(img, fmt)
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    else:
        img.save(buf, format="JPEG", quality=jpeg_quality, optimize=False, progressive=False)
    return buf.getvalue()


def array_to_pil(a: np.ndarray) -> Image.Image:
    """uint8 ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` -> PIL L / RGB image."""
    if a.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a), "L")
    if a.ndim == 3 and a.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(a), "RGB")
    raise ValueError(f"image arrays must be [H, W] or [H, W, 1|3], got shape {a.shape}")


def probe(data: bytes) -> tuple[str, int, int, bool]:
    """(mode, width, height, wide) from the header, without decoding the pixels; raises on non-images.
    ``mode`` is L or RGB, what :func:`decode_pil` makes of it; ``wide``: a grey image of more than 8 bits
    per pixel (16-bit PNG/TIFF), which is stored scaled to 8 bits, never passed through."""
    with Image.open(io.BytesIO(data)) as im:
        mode = im.mode
        w, h = im.size
    return ("L" if mode in _GRAY_MODES else "RGB"), w, h, mode in _WIDE_MODES


def decode_pil(data: bytes, mode: str) -> Image.Image:
    """Decode fully into a PIL image of ``mode`` (L or RGB); raises on corrupt or truncated data."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        opened = Image.open(io.BytesIO(data))
        opened.load()
    im = _to_8bit(opened)
    return im if im.mode == mode else im.convert(mode)


_OPS: dict[str, Any] = {}


def _tv_op(fmt: str | None) -> Any:
    """torchvision's C++ decode op for ``fmt``, or None. Called directly: the Python wrappers emit a
    DeprecationWarning on every call since torchvision 0.29 (the ops are what they call). Imported on first
    use, so writing shards never imports torch."""
    if fmt not in ("png", "jpeg"):
        return None
    if not _OPS:
        import torch
        import torchvision.io  # noqa: F401  (registers torch.ops.image)

        for name in ("png", "jpeg"):
            try:
                _OPS[name] = getattr(torch.ops.image, f"decode_{name}")
            except (AttributeError, RuntimeError):
                _OPS[name] = None
    return _OPS[fmt]


def decode_tensor(data: bytes, mode: str) -> "torch.Tensor":
    """Decode into a uint8 tensor ``[C, H, W]``, C = 1 for mode L and 3 for RGB; raises on corrupt data.

    PNG and JPEG go through libpng / libjpeg-turbo via torchvision's ops; anything else (or a torchvision
    without them) through PIL.
    """
    import torch
    from torchvision.io import ImageReadMode

    op = _tv_op(sniff_format(data))
    if op is not None:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        out: torch.Tensor = op(buf, (ImageReadMode.GRAY if mode == "L" else ImageReadMode.RGB).value, False)
        if out.dtype != torch.uint8:  # a 16-bit PNG (shards written before such files were scaled at writing)
            out = (out.to(torch.float32) / 257.0).round().clamp(0, 255).to(torch.uint8)
        return out
    a = torch.from_numpy(np.array(decode_pil(data, mode), dtype=np.uint8))
    return a[None] if a.dim() == 2 else a.permute(2, 0, 1).contiguous()
