"""Per-sample image operations on float tensor batches ``[B, C, H, W]`` in [0, 1], C in {1, 3}.

The building blocks of :class:`simclr.data.augment.batched.BatchedSimCLRAugment` (and the blur of the PIL path).
Every op takes one parameter per sample, so a whole batch with different crops / factors runs as a few large
kernels; and every op on a sample depends on that sample alone, so results do not depend on batch composition.

Colour semantics follow PIL's ``ImageEnhance`` / torchvision's ``ColorJitter`` (the per-sample PIL path uses
those): brightness scales, contrast blends with the mean of the grayscale image, saturation blends with the
grayscale image, hue rotates H in HSV. Official ``tf2/data_util.py`` differs in two details — contrast uses
per-channel means and saturation scales S in HSV — which change the images only slightly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr.data.augment.params import BRIGHTNESS, CONTRAST, SATURATION

#: ITU-R 601-2 luma weights, as PIL's ``convert("L")``.
LUMA = (0.299, 0.587, 0.114)


def luma(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W] -> [B, 1, H, W]`` grayscale (``[B, 1, H, W]`` is returned as is)."""
    if x.shape[1] == 1:
        return x
    # Three fused multiply-adds: faster on CPU than an einsum, which becomes a bmm over a 3-long dimension.
    y = x[:, 0:1] * LUMA[0]
    y.add_(x[:, 1:2], alpha=LUMA[1]).add_(x[:, 2:3], alpha=LUMA[2])
    return y


def crop_resize(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    flip: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Crop box ``[top, top+height) x [left, left+width)`` of each image, resized to ``size`` x ``size``,
    mirrored left-right where ``flip``. ``x``: float ``[B, C, H, W]``; box tensors ``[B]``.

    One ``grid_sample`` (bilinear, pixel centres as PIL's ``resize(box=...)``, edges replicated); the flip is a
    sign in the sampling grid, so it costs nothing. No antialiasing when the box is larger than ``size``, like
    the official ``tf.image.resize`` call (whose ``antialias`` defaults to False).
    """
    b, _, h_src, w_src = x.shape
    dt, dev = x.dtype, x.device
    hh, ww = height.to(dt), width.to(dt)
    sx = ww / w_src
    sx = torch.where(flip, -sx, sx)
    tx = (2 * left.to(dt) + ww) / w_src - 1
    sy = hh / h_src
    ty = (2 * top.to(dt) + hh) / h_src - 1
    # The sampling grid is separable (x depends on the column, y on the row): build it by broadcasting
    # rather than with affine_grid, whose [B, S*S, 3] x [B, 3, 2] bmm is slow on CPU.
    base = (torch.arange(size, dtype=dt, device=dev) * 2 + 1) / size - 1  # output pixel centres in [-1, 1]
    grid = torch.empty(b, size, size, 2, dtype=dt, device=dev)
    grid[..., 0] = (sx[:, None] * base[None, :] + tx[:, None])[:, None, :]
    grid[..., 1] = (sy[:, None] * base[None, :] + ty[:, None])[:, :, None]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def jitter_linear(
    x: torch.Tensor,
    op: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    *,
    need_luma: bool = True,
) -> torch.Tensor:
    """One step of colour jitter for the samples whose ``op`` is brightness, contrast or saturation (other
    samples pass through unchanged), clipped to [0, 1] as the official code clips after every op.

    All three are ``y = a x + (1 - s) luma(x) + t`` with per-sample scalars: brightness ``a = b``; contrast
    ``a = c, t = (1 - c) mean(luma(x))``; saturation ``a = s`` (the only one with a luma term). So one fused
    multiply-add applies each sample's own op. ``op``: int ``[B]`` (``-1`` = no op); factors: ``[B]``.
    ``need_luma=False`` promises that no sample does contrast or saturation (skips the luma pass).
    Works in place on ``x`` (and returns it): out-of-place ops cost a fresh allocation per step.
    """
    b = x.shape[0]
    dt, dev = x.dtype, x.device
    one = torch.ones(b, dtype=dt, device=dev)
    is_sat = op == SATURATION
    is_con = op == CONTRAST
    a = torch.where(op == BRIGHTNESS, brightness, one)
    a = torch.where(is_con, contrast, a)
    if x.shape[1] == 3:
        a = torch.where(is_sat, saturation, a)
    if not need_luma:
        return x.mul_(a[:, None, None, None]).clamp_(0.0, 1.0)
    gray = luma(x)
    # Row sums in float32 (each row summed by one thread), then float64 over rows: the mean does not depend
    # on how many threads share the work, so a view is bitwise the same in a worker and in the main process.
    mean = gray.sum(dim=3).double().sum(dim=(1, 2)).div_(gray.shape[2] * gray.shape[3]).to(dt)
    shift = torch.where(is_con, (1 - contrast) * mean, torch.zeros_like(one))
    if x.shape[1] == 3:
        # Saturation of a gray image is the identity, so only RGB batches get the luma blend.
        keep = torch.where(is_sat, 1 - saturation, torch.zeros_like(one))
        base = torch.addcmul(shift[:, None, None, None], gray, keep[:, None, None, None])
    else:
        base = shift[:, None, None, None].expand_as(gray)
    return torch.addcmul(base, x, a[:, None, None, None], out=x).clamp_(0.0, 1.0)


_HUE_OFFSETS = (3.0, 1.0, -1.0)  # n - 2 for n = 5, 3, 1 (R, G, B)


def hue_shift(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of ``[B, 3, H, W]`` images by ``delta`` (``[B]``, in turns, |delta| <= 0.5) keeping
    S and V — PIL's / torchvision's ``adjust_hue`` without the HSV round trip.

    V = max and C = max - min do not change. With the new hue h' in sixths of a turn, HSV->RGB gives channel n
    (5, 3, 1 for R, G, B) as ``V - C clamp(2 - d, 0, 1)`` = ``min + C clamp(d - 1, 0, 1)``, d the circular
    distance of ``h' + n`` to 2. Written with in-place arithmetic and boolean multiplies: ``torch.where`` /
    ``remainder`` on CPU cost several times a multiply-add, and this is the most expensive op of the recipe.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)
    minc = torch.minimum(r, g)
    torch.minimum(minc, b, out=minc)
    chroma = maxc - minc
    # Which channel is the max, as float 0/1 masks from sign() (comparisons into bool tensors and arithmetic
    # with bool operands are 4-8x slower than float ops on CPU): R wins ties, then G, as in PIL/torchvision.
    is_r = torch.sign(maxc - r).neg_().add_(1.0)
    is_g = torch.sign(maxc - g).neg_().add_(1.0).mul_(1.0 - is_r)
    is_b = (1.0 - is_r).sub_(is_g)
    # HSV hue in sixths of a turn: (g-b)/C if R is max, 2 + (b-r)/C if G is, 4 + (r-g)/C if B is.
    h6 = torch.sub(g, b).mul_(is_r)
    h6.addcmul_(torch.sub(b, r), is_g).addcmul_(torch.sub(r, g), is_b)
    h6.div_(chroma.clamp(min=1e-12)).add_(is_g, alpha=2.0).add_(is_b, alpha=4.0)
    h6.add_(6.0 * delta.to(x.dtype)[:, None, None])
    h6.sub_(torch.floor(h6 / 6.0).mul_(6.0))  # wrap into [0, 6)
    offsets = torch.tensor(_HUE_OFFSETS, dtype=x.dtype, device=x.device)[None, :, None, None]
    k = h6.unsqueeze(1) + offsets  # h' + n - 2, in [-1, 9)
    k.sub_(torch.floor((k + 3.0) / 6.0).mul_(6.0)).abs_()  # circular distance d in [0, 3]
    k.sub_(1.0).clamp_(0.0, 1.0)
    return torch.addcmul(minc.unsqueeze(1), chroma.unsqueeze(1), k, out=k)


def gaussian_kernels(sigma: torch.Tensor, radius: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 2 radius + 1]`` normalised Gaussian taps for per-sample ``sigma`` (``[B]``)."""
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=sigma.device)
    k = torch.exp(-(t[None, :] ** 2) / (2.0 * sigma.to(dtype)[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of each image with its own ``sigma`` (``[B]``); ``x`` ``[B, C, H, W]``.

    Kernel ``2 radius + 1`` taps (official: 10% of the image side). Reflect padding rather than the official
    zero padding ('SAME'), which darkens the borders. Written as ``2 radius + 1`` shifted multiply-adds per
    direction with per-sample weights: on CPU that is about 3x faster than a depthwise ``conv2d`` with one
    group per (sample, channel), and each sample still depends only on itself.
    """
    if radius <= 0:
        return x
    b, c, h, w = x.shape
    k = gaussian_kernels(sigma, radius, x.dtype)[:, :, None, None, None]  # [B, K, 1, 1, 1]
    mode = "reflect" if radius < min(h, w) else "replicate"
    pad = F.pad(x, (radius, radius, 0, 0), mode=mode)
    y = x * k[:, radius]
    for i in range(2 * radius + 1):
        if i != radius:
            y.addcmul_(pad[..., i : i + w], k[:, i])
    pad = F.pad(y, (0, 0, radius, radius), mode=mode)
    y = y.mul_(k[:, radius])
    for i in range(2 * radius + 1):
        if i != radius:
            y.addcmul_(pad[..., i : i + h, :], k[:, i])
    return y.clamp_(0.0, 1.0)


def to_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """``[..., C, H, W]`` float with C in {1, 3} -> ``out_channels`` (gray repeated, or RGB -> luma)."""
    c = x.shape[-3]
    if c == out_channels:
        return x
    if c == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device)
    return (x * w[:, None, None]).sum(dim=-3, keepdim=True)
