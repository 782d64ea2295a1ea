"""The random parameters of one SimCLR view, drawn from its seed — shared by the PIL and the batched path.

Both augmentation paths call :func:`sample_view_params` with the same per-view seeds, so they apply the SAME
crop boxes, flips, jitter factors, jitter orders, grayscale and blur choices; only the pixel arithmetic differs
(PIL's uint8 ops versus float tensor ops). Recipe: SimCLR paper appendix A and the official
``tf2/data_util.py`` (``crop_and_resize``, ``color_jitter_rand``, ``random_color_jitter``, ``random_blur``):

- random resized crop: area fraction U[min_area, 1], aspect ratio log-uniform in [3/4, 4/3], up to 10 tries,
  else the whole image (the official fallback of ``sample_distorted_bounding_box``);
- horizontal flip with p = 0.5;
- colour jitter with p = 0.8: brightness, contrast, saturation factors U[max(0, 1 - 0.8 s), 1 + 0.8 s], hue
  shift U[-0.2 s, 0.2 s], the four applied in a random order (``color_jitter_rand``);
- grayscale with p = 0.2 (after the jitter, as ``random_color_jitter`` does);
- Gaussian blur with p = 0.5 and sigma U[0.1, 2.0] (ImageNet-size images only in the official code).

Each quantity reads its own fixed column of :func:`simclr.data.rng.uniforms`, so switching colour off (the
fine-tuning transform) leaves the crops and flips of a seed unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simclr.data.rng import uniforms

CROP_TRIES = 10
# Column layout of the uniforms of one view; never reorder (it would change every augmentation).
_C_CROP = 0  # 4 per try: area, log-aspect, top, left
_C_FLIP = _C_CROP + 4 * CROP_TRIES
_C_JITTER = _C_FLIP + 1
_C_FACTORS = _C_JITTER + 1  # brightness, contrast, saturation, hue
_C_ORDER = _C_FACTORS + 4  # 4 sort keys -> a permutation of the jitter ops
_C_GRAY = _C_ORDER + 4
_C_BLUR = _C_GRAY + 1
_C_SIGMA = _C_BLUR + 1
NUM_UNIFORMS = _C_SIGMA + 1

#: Jitter op ids in ``ViewParams.order``.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


@dataclass(frozen=True)
class ViewParams:
    """Parameters of B views (numpy arrays of length B; ``order`` is ``[B, 4]``).

    Crop box in source pixels: rows ``top .. top+height``, columns ``left .. left+width``.
    """

    top: npt.NDArray[np.int64]
    left: npt.NDArray[np.int64]
    height: npt.NDArray[np.int64]
    width: npt.NDArray[np.int64]
    flip: npt.NDArray[np.bool_]
    jitter: npt.NDArray[np.bool_]
    brightness: npt.NDArray[np.float64]
    contrast: npt.NDArray[np.float64]
    saturation: npt.NDArray[np.float64]
    hue: npt.NDArray[np.float64]
    order: npt.NDArray[np.int64]
    gray: npt.NDArray[np.bool_]
    blur: npt.NDArray[np.bool_]
    sigma: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.top.shape[0])

    def take(self, rows: slice) -> ViewParams:
        """The parameters of a sub-batch."""
        return ViewParams(**{f: getattr(self, f)[rows] for f in self.__dataclass_fields__})


def _check(name: str, ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(f"{name} {msg}")


def sample_view_params(
    seeds: npt.ArrayLike,
    src_hw: npt.ArrayLike,
    *,
    strength: float = 1.0,
    min_area: float = 0.08,
    crop: bool = True,
    color: bool = True,
    blur: bool = False,
    flip: bool = True,
) -> ViewParams:
    """Draw the parameters of ``B`` views.

    Args:
        seeds: ``[B]`` integer view seeds (see :func:`simclr.data.augment.simclr.view_seed`).
        src_hw: ``[B, 2]`` (or ``[2]`` for all) source image heights and widths in pixels.
        strength: colour-jitter strength s (official: 1.0 ImageNet, 0.5 CIFAR).
        min_area: smallest crop area as a fraction of the image.
        crop / color / blur / flip: switch a family of ops off (it then never fires).
    """
    _check("strength", strength >= 0 and math.isfinite(strength), f"must be a finite number >= 0, got {strength}")
    _check("min_area", 0 < min_area <= 1, f"must be in (0, 1], got {min_area}")
    u = uniforms(seeds, NUM_UNIFORMS)
    b = u.shape[0]
    hw = np.broadcast_to(np.asarray(src_hw, dtype=np.int64).reshape(-1, 2), (b, 2))
    h_src, w_src = hw[:, 0], hw[:, 1]
    if b and (h_src.min() < 1 or w_src.min() < 1):
        raise ValueError(f"src_hw must be positive image sizes, got {hw[(h_src < 1) | (w_src < 1)][0].tolist()}")

    if crop:
        tries = u[:, _C_CROP : _C_CROP + 4 * CROP_TRIES].reshape(b, CROP_TRIES, 4)
        area = (h_src * w_src).astype(np.float64)[:, None]
        target = area * (min_area + tries[..., 0] * (1.0 - min_area))
        log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
        aspect = np.exp(log_lo + tries[..., 1] * (log_hi - log_lo))
        cw = np.rint(np.sqrt(target * aspect)).astype(np.int64)
        ch = np.rint(np.sqrt(target / aspect)).astype(np.int64)
        ok = (cw >= 1) & (ch >= 1) & (cw <= w_src[:, None]) & (ch <= h_src[:, None])
        first = ok.argmax(axis=1)
        found = ok[np.arange(b), first]
        rows = np.arange(b)
        height = np.where(found, ch[rows, first], h_src)
        width = np.where(found, cw[rows, first], w_src)
        # Offsets uniform over the valid positions (integers, as tf.image.sample_distorted_bounding_box).
        top = np.floor(tries[rows, first, 2] * (h_src - height + 1)).astype(np.int64)
        left = np.floor(tries[rows, first, 3] * (w_src - width + 1)).astype(np.int64)
        top = np.where(found, np.minimum(top, h_src - height), 0)
        left = np.where(found, np.minimum(left, w_src - width), 0)
    else:
        top = np.zeros(b, np.int64)
        left = np.zeros(b, np.int64)
        height, width = h_src.copy(), w_src.copy()

    lo = max(0.0, 1.0 - 0.8 * strength)
    hi = 1.0 + 0.8 * strength
    f = u[:, _C_FACTORS : _C_FACTORS + 4]
    return ViewParams(
        top=top.astype(np.int64),
        left=left.astype(np.int64),
        height=height.astype(np.int64),
        width=width.astype(np.int64),
        flip=(u[:, _C_FLIP] < 0.5) & flip,
        jitter=(u[:, _C_JITTER] < 0.8) & color & (strength > 0),
        brightness=lo + f[:, 0] * (hi - lo),
        contrast=lo + f[:, 1] * (hi - lo),
        saturation=lo + f[:, 2] * (hi - lo),
        hue=(2.0 * f[:, 3] - 1.0) * 0.2 * strength,
        order=np.argsort(u[:, _C_ORDER : _C_ORDER + 4], axis=1, kind="stable").astype(np.int64),
        gray=(u[:, _C_GRAY] < 0.2) & color,
        blur=(u[:, _C_BLUR] < 0.5) & blur,
        sigma=0.1 + u[:, _C_SIGMA] * (2.0 - 0.1),
    )


def blur_radius(size: int) -> int:
    """Half-width of the blur kernel for output ``size``: official ``kernel_size = size // 10``, radius half
    of it (``tf2/data_util.gaussian_blur``), so 96 px -> 9 taps, 224 px -> 23 taps, 32 px -> 3 taps."""
    return (size // 10) // 2


def auto_blur(size: int, blur: bool | None) -> bool:
    """``blur=None`` means: blur for ImageNet-size views (size > 64), none for CIFAR-size ones (official)."""
    return size > 64 if blur is None else bool(blur)


def check_output(size: int, out_channels: int) -> None:
    """Validate the output geometry shared by every transform."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if out_channels not in (1, 3):
        raise ValueError(f"out_channels must be 1 or 3, got {out_channels!r}")


class AugmentSettings:
    """The settings both SimCLR augmentation paths share (per-sample PIL and batched tensor), validated once.

    size: output side in pixels; strength: colour-jitter strength s; blur: Gaussian blur on/off (None = on
    for size > 64: official ImageNet yes, CIFAR no); min_area: smallest crop area fraction; out_channels: 3
    (gray images repeated) or 1; color: colour jitter and grayscale on/off.
    """

    def __init__(
        self,
        size: int,
        strength: float = 1.0,
        blur: bool | None = None,
        min_area: float = 0.08,
        out_channels: int = 3,
        color: bool = True,
    ) -> None:
        check_output(size, out_channels)
        sample_view_params(np.zeros(1, np.int64), (1, 1), strength=strength, min_area=min_area)  # validates
        self.size = size
        self.strength = float(strength)
        self.blur = auto_blur(size, blur)
        self.min_area = float(min_area)
        self.out_channels = out_channels
        self.color = bool(color)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, strength={self.strength}, blur={self.blur}, "
            f"min_area={self.min_area}, out_channels={self.out_channels}, color={self.color})"
        )
