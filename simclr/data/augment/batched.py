"""The batched SimCLR augmentation: a whole batch of uint8 images -> views, on CPU or CUDA, in a few kernels.

Same recipe and same per-view parameters as the per-sample :class:`simclr.data.augment.simclr.SimCLRAugment` (both
draw from :func:`simclr.data.augment.params.sample_view_params`), so a seed gives the same crop, flip, jitter
factors and order, grayscale and blur in both paths; the pixels differ only by PIL's uint8 rounding and its
antialiased downscaling. All parameters are drawn on the CPU from the seeds (numpy), and the branching
decisions are taken there too, so a CUDA batch runs without host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from simclr.data.augment.image_ops import crop_resize, gaussian_blur, hue_shift, jitter_linear, luma, to_channels
from simclr.data.augment.params import (
    AugmentSettings,
    CONTRAST,
    HUE,
    SATURATION,
    ViewParams,
    blur_radius,
    sample_view_params,
)


def _seeds_numpy(seeds: torch.Tensor | npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    s = seeds.detach().cpu().numpy() if isinstance(seeds, torch.Tensor) else np.asarray(seeds)
    s = s.reshape(-1)
    if s.shape[0] != n:
        raise ValueError(f"seeds must have one entry per image: got {s.shape[0]} seeds for {n} images")
    if s.dtype.kind not in "iu":
        raise ValueError(f"seeds must be integers, got dtype {s.dtype}")
    return s.astype(np.int64)


class BatchedSimCLRAugment(AugmentSettings):
    """``aug(images, seeds) -> float Tensor[B, out_channels, size, size]`` in [0, 1], on ``images.device``.

    Args:
        size, strength, blur, min_area, out_channels, color: as :class:`simclr.data.augment.simclr.SimCLRAugment`.

    Call with ``images`` a uint8 ``[B, C, H, W]`` tensor (C in {1, 3}), or a sequence of uint8 ``[C, H_i, W_i]``
    tensors of different sizes (cropped one by one, then batched), and ``seeds`` int ``[B]`` (one view seed
    each, see :func:`simclr.data.augment.simclr.view_seed`). Each output depends only on its own image and seed —
    not on the batch it came in. Gray inputs stay one channel until the end (saturation, hue and grayscale are
    identities on them) and are repeated to ``out_channels`` last.
    """

    def params(self, seeds: npt.ArrayLike, src_hw: npt.ArrayLike) -> ViewParams:
        """The parameters this transform draws for ``seeds`` on images of ``src_hw`` (``[B, 2]``)."""
        return sample_view_params(
            seeds, src_hw, strength=self.strength, min_area=self.min_area, color=self.color, blur=self.blur
        )

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor], seeds: torch.Tensor | npt.ArrayLike) -> torch.Tensor:
        batch: torch.Tensor | list[torch.Tensor]
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3):
                raise ValueError(
                    f"images must be a uint8 tensor [B, C, H, W] with C in (1, 3), got {images.dtype} "
                    f"{tuple(images.shape)}"
                )
            batch = images
            hw = np.tile(np.array(images.shape[2:], dtype=np.int64), (images.shape[0], 1))
            channels = images.shape[1]
            device = images.device
        else:
            batch = list(images)
            if not batch:
                raise ValueError("images is empty")
            for i, im in enumerate(batch):
                if im.dim() != 3 or im.dtype != torch.uint8 or im.shape[0] not in (1, 3):
                    raise ValueError(f"images[{i}] must be uint8 [C, H, W] with C in (1, 3), got {im.dtype} {tuple(im.shape)}")
            channels = batch[0].shape[0]
            if any(im.shape[0] != channels for im in batch):
                raise ValueError("images must all have the same number of channels")
            hw = np.array([im.shape[1:] for im in batch], dtype=np.int64)
            device = batch[0].device
        b = len(batch)
        p = self.params(_seeds_numpy(seeds, b), hw)
        # On CPU, work through the batch in chunks of about CHUNK_BYTES of float pixels: the dozen passes of
        # the recipe then run in cache instead of streaming a 50 MB tensor (2 x 256 views of 96 px) through
        # memory each time — measured about 1.3x faster at 96 px. Samples are independent, so chunking changes
        # nothing in the results. (One chunk on a GPU.)
        chunk = b if device.type != "cpu" else max(1, self.CHUNK_BYTES // (4 * channels * self.size * self.size))
        if b <= chunk:
            return self._apply(batch, p, channels, device)
        out = torch.empty(b, self.out_channels, self.size, self.size)
        for i in range(0, b, chunk):
            rows = slice(i, min(b, i + chunk))
            out[rows] = self._apply(batch[rows], p.take(rows), channels, device)
        return out

    #: Target float bytes per CPU chunk (a few MB: measured best between 2 and 4 MB at 96 px).
    CHUNK_BYTES = 4 << 20

    def _apply(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        p: ViewParams,
        channels: int,
        device: torch.device,
    ) -> torch.Tensor:
        b = len(p)
        # One host->device copy for all per-sample numbers.
        ints = torch.from_numpy(np.stack([p.top, p.left, p.height, p.width, p.flip.astype(np.int64)], 1)).to(device)
        floats = torch.from_numpy(
            np.stack([p.brightness, p.contrast, p.saturation, p.hue, p.sigma], 1).astype(np.float32)
        ).to(device)
        top, left, height, width, flip = ints.unbind(1)
        flip_b = flip.bool()
        # Scale to [0, 1] first: bilinear sampling of [0, 1] values stays in [0, 1] (no clamp pass needed).
        if isinstance(images, torch.Tensor):
            x = crop_resize(images.float().mul_(1.0 / 255.0), top, left, height, width, flip_b, self.size)
        else:
            x = torch.cat(
                [
                    crop_resize(im[None].float().mul_(1.0 / 255.0), top[i : i + 1], left[i : i + 1], height[i : i + 1], width[i : i + 1], flip_b[i : i + 1], self.size)
                    for i, im in enumerate(images)
                ]
            )
        brightness, contrast, saturation, hue, sigma = floats.unbind(1)

        if p.jitter.any():
            for step in range(4):
                op_np = np.where(p.jitter, p.order[:, step], -1)
                if ((op_np >= 0) & (op_np != HUE)).any():
                    op = torch.from_numpy(op_np).to(device)
                    need_luma = bool(((op_np == CONTRAST) | (op_np == SATURATION)).any())
                    x = jitter_linear(x, op, brightness, contrast, saturation, need_luma=need_luma)
                hue_idx = np.nonzero(op_np == HUE)[0]
                if channels == 3 and hue_idx.size:
                    idx = torch.from_numpy(hue_idx).to(device)
                    x.index_copy_(0, idx, hue_shift(x.index_select(0, idx), hue.index_select(0, idx)))
        gray_idx = np.nonzero(p.gray)[0]
        if channels == 3 and gray_idx.size:
            idx = torch.from_numpy(gray_idx).to(device)
            x.index_copy_(0, idx, luma(x.index_select(0, idx)).expand(-1, 3, -1, -1))
        blur_idx = np.nonzero(p.blur)[0]
        radius = blur_radius(self.size)
        if blur_idx.size and radius > 0:
            idx = torch.from_numpy(blur_idx).to(device)
            x.index_copy_(0, idx, gaussian_blur(x.index_select(0, idx), sigma.index_select(0, idx), radius))
        assert x.shape[0] == b
        return to_channels(x, self.out_channels).contiguous()
