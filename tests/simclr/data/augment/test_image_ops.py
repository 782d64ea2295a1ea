import numpy as np
import pytest
import torch
from PIL import Image
import torchvision.transforms.v2.functional as TF

from simclr.data.augment.image_ops import crop_resize, gaussian_blur, hue_shift, jitter_linear, luma, to_channels
from simclr.data.augment.params import BRIGHTNESS, CONTRAST, SATURATION


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(6, 3, 12, 10)


def test_hue_shift_matches_torchvision_adjust_hue(x: torch.Tensor) -> None:
    delta = torch.tensor([-0.5, -0.2, 0.0, 0.05, 0.2, 0.45])
    ours = hue_shift(x, delta)
    for i in range(6):
        ref = TF.adjust_hue(x[i], float(delta[i]))
        torch.testing.assert_close(ours[i], ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(hue_shift(x, torch.zeros(6)), x, atol=2e-6, rtol=0)


def test_jitter_linear_matches_torchvision_per_sample(x: torch.Tensor) -> None:
    op = torch.tensor([BRIGHTNESS, CONTRAST, SATURATION, -1, BRIGHTNESS, SATURATION])
    f = torch.tensor([1.3, 0.6, 1.7, 1.5, 0.4, 0.2])
    ours = jitter_linear(x.clone(), op, f, f, f)
    refs = [
        TF.adjust_brightness(x[0], 1.3),
        TF.adjust_contrast(x[1], 0.6),
        TF.adjust_saturation(x[2], 1.7),
        x[3],
        TF.adjust_brightness(x[4], 0.4),
        TF.adjust_saturation(x[5], 0.2),
    ]
    for i, ref in enumerate(refs):
        torch.testing.assert_close(ours[i], ref, atol=1e-4, rtol=0)  # luma 0.299 vs torchvision 0.2989


def test_gray_images_take_scale_ops_and_ignore_saturation() -> None:
    g = torch.rand(3, 1, 5, 5)
    op = torch.tensor([BRIGHTNESS, SATURATION, CONTRAST])
    f = torch.tensor([0.5, 0.1, 2.0])
    out = jitter_linear(g.clone(), op, f, f, f)
    torch.testing.assert_close(out[0], g[0] * 0.5)
    torch.testing.assert_close(out[1], g[1])
    torch.testing.assert_close(out[2], ((g[2] - g[2].mean()) * 2 + g[2].mean()).clamp(0, 1), atol=1e-6, rtol=0)


def test_blur_matches_a_direct_convolution_and_keeps_samples_independent(x: torch.Tensor) -> None:
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.7])
    out = gaussian_blur(x, sigma, 2)
    for i in range(6):
        t = torch.arange(-2, 3, dtype=torch.float32)
        k = torch.exp(-(t**2) / (2 * sigma[i] ** 2))
        k = k / k.sum()
        pad = torch.nn.functional.pad(x[i : i + 1], (2, 2, 2, 2), mode="reflect")
        ref = torch.nn.functional.conv2d(pad, (k[:, None] * k[None, :]).expand(3, 1, 5, 5), groups=3)[0]
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(gaussian_blur(x[2:3], sigma[2:3], 2), out[2:3])


def test_crop_resize_identity_flip_and_box(x: torch.Tensor) -> None:
    b = x.shape[0]
    z = torch.zeros(b, dtype=torch.long)
    h = torch.full((b,), 12)
    w = torch.full((b,), 10)
    no = torch.zeros(b, dtype=torch.bool)
    sq = x[:, :, :10, :10]
    ident = crop_resize(sq, z, z, w, w, no, 10)
    torch.testing.assert_close(ident, sq, atol=1e-5, rtol=0)
    flipped = crop_resize(sq, z, z, w, w, ~no, 10)
    torch.testing.assert_close(flipped, sq.flip(-1), atol=1e-5, rtol=0)
    # An upscaled box samples the same points as PIL's resize(box=...) (pixel centres, neighbours at edges).
    img = (x[0] * 255).round().to(torch.uint8)
    pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((8, 8), Image.Resampling.BILINEAR, box=(4, 3, 9, 9))
    ours = crop_resize(img[None].float(), z[:1] + 3, z[:1] + 4, h[:1] * 0 + 6, w[:1] * 0 + 5, no[:1], 8)[0]
    ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()
    assert (ours - ref).abs().max() <= 1.0  # PIL rounds to uint8


def test_luma_and_channels() -> None:
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert luma(rgb).item() == pytest.approx(0.299)
    assert to_channels(torch.rand(2, 1, 4, 4), 3).shape == (2, 3, 4, 4)
    assert to_channels(torch.rand(2, 3, 4, 4), 1).shape == (2, 1, 4, 4)
