"""SimCLR augmentations (paper appendix A; official ``tf2/data_util.py``): per-view seeds, the per-sample PIL
path and the evaluation transform (the batched tensor path is :mod:`simclr.data.augment.batched`).

Randomness is a pure function of (seed, epoch, sample key, view) — docs/DESIGN.md principle 4:
``view_seed(seed, epoch, key, view)`` names a view, and :func:`simclr.data.augment.params.sample_view_params`
turns that number into crop box, flip, jitter factors and order, grayscale and blur choices. The same sample
therefore gets the same two views whatever the worker count, batch composition or restart history, and the PIL
and batched paths agree parameter for parameter.

Output convention: float tensors in [0, 1] (the official code feeds [0, 1] images to the network, no mean/std
normalisation), shape ``[out_channels, size, size]``. Interpolation is bilinear throughout (the official code
uses bicubic without antialiasing).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image

from simclr.data.augment.image_ops import crop_resize, gaussian_blur, to_channels
from simclr.data.augment.params import (
    AugmentSettings,
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    blur_radius,
    check_output,
    sample_view_params,
)

#: The official centre-crop proportion for ImageNet evaluation (``data_util.CROP_PROPORTION``).
CROP_PROPORTION = 0.875
_MASK63 = (1 << 63) - 1


def view_seed(seed: int, epoch: int, key: str, view: int) -> int:
    """A stable 63-bit seed for one view of one sample in one epoch.

    BLAKE2b of the four parts, not Python's ``hash()``: that is salted per process (PYTHONHASHSEED), so it
    would differ between DataLoader workers, ranks and restarts.
    """
    msg = f"{int(seed)}\x1f{int(epoch)}\x1f{key}\x1f{int(view)}".encode()
    return int.from_bytes(hashlib.blake2b(msg, digest_size=8).digest(), "little") & _MASK63


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (L or RGB) -> float ``[C, H, W]`` in [0, 1]."""
    a = np.array(img, dtype=np.uint8)
    t = torch.from_numpy(a)
    t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
    return t.float().div_(255.0)


def normalize_mode(img: Image.Image) -> Image.Image:
    """Any PIL mode -> L or RGB (palette, alpha, CMYK, 16-bit ... are converted)."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "1", "LA"):
        return img.convert("L")
    return img.convert("RGB")


def _hue_pil(img: Image.Image, delta: float) -> Image.Image:
    """Rotate the hue of an RGB image by ``delta`` turns in PIL's uint8 HSV (255 = one turn)."""
    h, s, v = img.convert("HSV").split()
    a = np.array(h, dtype=np.uint8)
    a += np.uint8(int(round(delta * 255)) % 256)  # wraps modulo 256, as the hue circle should
    return Image.merge("HSV", (Image.fromarray(a, "L"), s, v)).convert("RGB")


class SimCLRAugment(AugmentSettings):
    """The per-sample SimCLR view: ``aug(img, seed) -> float Tensor[out_channels, size, size]`` in [0, 1].

    Random resized crop (area ``min_area``-1, aspect 3/4-4/3) -> flip -> colour jitter (p 0.8, strength s,
    random order) -> grayscale (p 0.2) -> Gaussian blur (p 0.5, kernel 10% of ``size``, sigma U[0.1, 2]).
    ``color=False`` keeps only crop and flip (the official fine-tuning transform).

    Args:
        size: output side in pixels.
        strength: colour-jitter strength (official: 1.0 ImageNet, 0.5 CIFAR).
        blur: Gaussian blur on/off; None = on for size > 64 (official: ImageNet yes, CIFAR no).
        min_area: smallest crop area fraction.
        out_channels: 3 (gray images repeated) or 1.
        color: colour jitter and grayscale on/off.
    """

    def __call__(self, img: Image.Image, seed: int) -> torch.Tensor:
        img = normalize_mode(img)
        w_src, h_src = img.size
        p = sample_view_params(
            np.array([seed], dtype=np.int64),
            (h_src, w_src),
            strength=self.strength,
            min_area=self.min_area,
            color=self.color,
            blur=self.blur,
        )
        top, left, h, w = int(p.top[0]), int(p.left[0]), int(p.height[0]), int(p.width[0])
        img = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if p.flip[0]:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if p.jitter[0]:
            for op in p.order[0]:
                if op == BRIGHTNESS:
                    img = Image.blend(Image.new(img.mode, img.size, 0), img, float(p.brightness[0]))
                elif op == CONTRAST:
                    gray = img.convert("L") if img.mode != "L" else img
                    mean = float(np.asarray(gray, dtype=np.float64).mean())
                    fill = int(mean + 0.5) if img.mode == "L" else (int(mean + 0.5),) * 3
                    img = Image.blend(Image.new(img.mode, img.size, fill), img, float(p.contrast[0]))
                elif op == SATURATION and img.mode == "RGB":
                    img = Image.blend(img.convert("L").convert("RGB"), img, float(p.saturation[0]))
                elif op == HUE and img.mode == "RGB":
                    img = _hue_pil(img, float(p.hue[0]))
        if p.gray[0] and img.mode == "RGB":
            img = img.convert("L")
        x = pil_to_tensor(img)
        if p.blur[0]:
            x = gaussian_blur(x[None], torch.tensor(p.sigma[:1]), blur_radius(self.size))[0]
        return to_channels(x, self.out_channels)


class EvalTransform:
    """Evaluation transform: ``t(img) -> float Tensor[out_channels, size, size]`` in [0, 1].

    Official ``preprocess_for_eval``: a centre square crop of ``crop_proportion`` of the shorter side, then a
    resize; the official code crops only for images larger than CIFAR (``test_crop = image_size > 32``), so
    ``crop_proportion=None`` means 0.875 for size > 32 and 1.0 (resize only) otherwise.
    """

    def __init__(self, size: int, out_channels: int = 3, crop_proportion: float | None = None) -> None:
        check_output(size, out_channels)
        if crop_proportion is None:
            crop_proportion = CROP_PROPORTION if size > 32 else 1.0
        if not 0 < crop_proportion <= 1:
            raise ValueError(f"crop_proportion must be in (0, 1], got {crop_proportion}")
        self.size = size
        self.out_channels = out_channels
        self.crop_proportion = float(crop_proportion)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, out_channels={self.out_channels}, crop={self.crop_proportion})"

    def box(self, h_src: int, w_src: int) -> tuple[int, int, int]:
        """The centre square ``(top, left, side)`` taken from an ``h_src`` x ``w_src`` image."""
        side = max(1, int(round(self.crop_proportion * min(h_src, w_src))))
        return (h_src - side + 1) // 2, (w_src - side + 1) // 2, side

    def __call__(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        """``img``: a PIL image, or a uint8 ``[C, H, W]`` tensor (the batched decode path, C in {1, 3})."""
        if isinstance(img, torch.Tensor):
            if img.dim() != 3 or img.dtype != torch.uint8 or img.shape[0] not in (1, 3):
                raise ValueError(f"img must be a uint8 tensor [C, H, W] with C in (1, 3), got {img.dtype} {tuple(img.shape)}")
            top, left, side = self.box(int(img.shape[1]), int(img.shape[2]))
            t = torch.tensor
            x = crop_resize(img[None].float() / 255, t([top]), t([left]), t([side]), t([side]), t([False]), self.size)
            return to_channels(x[0], self.out_channels)
        img = normalize_mode(img)
        w_src, h_src = img.size
        top, left, side = self.box(h_src, w_src)
        img = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        return to_channels(pil_to_tensor(img), self.out_channels)


__all__ = [
    "CROP_PROPORTION",
    "EvalTransform",
    "SimCLRAugment",
    "view_seed",
]
