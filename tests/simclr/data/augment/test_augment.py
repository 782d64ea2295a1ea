import numpy as np
import pytest
import torch
from PIL import Image

from simclr.data.augment.batched import BatchedSimCLRAugment
from simclr.data.augment.simclr import EvalTransform, SimCLRAugment, view_seed


def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a)


def _uint8(imgs: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(imgs)
    return t[:, None] if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


def test_view_seed_is_stable_across_processes_and_hash_seeds() -> None:
    # A pinned value: Python's hash() would change with PYTHONHASHSEED, i.e. between workers and restarts.
    here = view_seed(3, 7, "train_00012", 1)
    assert here == 1484662375378024585
    assert len({view_seed(0, 0, "k", 0), view_seed(0, 0, "k", 1), view_seed(0, 1, "k", 0), view_seed(1, 0, "k", 0),
                view_seed(0, 0, "k2", 0)}) == 5
    assert 0 <= here < 2**63


def test_pil_views_are_deterministic_shaped_and_in_range(fmnist_small) -> None:
    images, _ = fmnist_small
    aug = SimCLRAugment(32, strength=0.5)
    img = _pil(images[0])
    a, b = aug(img, 11), aug(img, 11)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(img, 12))
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    torch.testing.assert_close(a[0], a[1])  # a gray input repeated to 3 channels
    assert SimCLRAugment(32, out_channels=1)(img, 11).shape == (1, 32, 32)


def test_finetune_transform_keeps_colours(rgb_images) -> None:
    rgb = rgb_images(1, 40, 40)[0]
    aug = SimCLRAugment(32, color=False)
    for s in range(20):
        v = aug(_pil(rgb), s)
        # crop + flip only: every output colour lies in the input's colour range per channel
        for c in range(3):
            assert rgb[..., c].min() / 255 - 1e-6 <= float(v[c].min()) and float(v[c].max()) <= rgb[..., c].max() / 255 + 1e-6


def test_eval_transform_resizes_small_and_centre_crops_large(rgb_images) -> None:
    small = EvalTransform(32)(_pil(rgb_images(1, 28, 28)[0]))
    assert small.shape == (3, 32, 32)
    big = np.zeros((100, 100, 3), np.uint8)
    big[6:94, 6:94] = 255  # a white square of side 88 = 0.875 * 100 -> the centre crop is all white
    out = EvalTransform(64)(_pil(big))
    assert out.shape == (3, 64, 64) and float(out[:, 2:-2, 2:-2].min()) > 0.99  # edges see the filter support
    assert float(EvalTransform(64, crop_proportion=1.0)(_pil(big)).min()) < 0.1


def test_invalid_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="size"):
        SimCLRAugment(0)
    with pytest.raises(ValueError, match="out_channels"):
        BatchedSimCLRAugment(32, out_channels=2)
    with pytest.raises(ValueError, match="strength"):
        SimCLRAugment(32, strength=-0.1)
    with pytest.raises(ValueError, match="seeds"):
        BatchedSimCLRAugment(8)(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([1]))
    with pytest.raises(ValueError, match="uint8"):
        BatchedSimCLRAugment(8)(torch.zeros(2, 3, 8, 8), torch.tensor([1, 2]))


@pytest.mark.parametrize(
    "size,src,gray,blur",
    [(32, 28, True, None), (32, 40, False, None), (48, 40, False, True)],
)
def test_batched_path_matches_the_pil_path_sample_by_sample(fmnist_small, rgb_images, size, src, gray, blur) -> None:
    """Same seeds -> same parameters; pixels differ only by PIL's uint8 rounding (and antialiasing)."""
    n = 48
    imgs = fmnist_small[0][:n] if gray else rgb_images(n, src, src, seed=5)
    seeds = [view_seed(0, 0, f"k{i}", 0) for i in range(n)]
    pil = torch.stack([SimCLRAugment(size, 1.0, blur)(_pil(im), s) for im, s in zip(imgs, seeds)])
    bat = BatchedSimCLRAugment(size, 1.0, blur)(_uint8(imgs), torch.tensor(seeds))
    assert bat.shape == pil.shape == (n, 3, size, size)
    diff = (bat - pil).abs().mean(dim=(1, 2, 3))
    assert float(diff.max()) < 0.03, diff
    # Moments over the batch agree: mean and spread of pixel values per channel.
    torch.testing.assert_close(bat.mean(dim=(0, 2, 3)), pil.mean(dim=(0, 2, 3)), atol=0.01, rtol=0)
    torch.testing.assert_close(bat.std(dim=(0, 2, 3)), pil.std(dim=(0, 2, 3)), atol=0.01, rtol=0)


def test_batched_views_do_not_depend_on_batch_composition(rgb_images) -> None:
    imgs = _uint8(rgb_images(12, 24, 24, seed=3))
    seeds = torch.tensor([view_seed(1, 2, f"k{i}", 0) for i in range(12)])
    aug = BatchedSimCLRAugment(16, strength=1.0, blur=True)
    whole = aug(imgs, seeds)
    perm = torch.tensor([5, 0, 11, 3])
    part = aug(imgs[perm], seeds[perm])
    torch.testing.assert_close(part, whole[perm], atol=1e-6, rtol=0)
    one = aug(imgs[7:8], seeds[7:8])
    torch.testing.assert_close(one, whole[7:8], atol=1e-6, rtol=0)
    # Images of different sizes (a list) are cropped one by one with the same parameters.
    as_list = aug([imgs[i] for i in range(12)], seeds)
    torch.testing.assert_close(as_list, whole, atol=1e-5, rtol=0)


def test_batched_views_do_not_depend_on_the_thread_count(rgb_images) -> None:
    imgs = _uint8(rgb_images(64, 40, 40, seed=6))
    seeds = torch.arange(64) * 104729
    aug = BatchedSimCLRAugment(32, strength=1.0, blur=True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = aug(imgs, seeds)
        torch.set_num_threads(2)
        two = aug(imgs, seeds)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_path_on_cuda_matches_cpu(rgb_images) -> None:
    imgs = _uint8(rgb_images(16, 40, 40, seed=4))
    seeds = torch.arange(16) * 7919
    aug = BatchedSimCLRAugment(32, strength=1.0, blur=True)
    cpu = aug(imgs, seeds)
    gpu = aug(imgs.cuda(), seeds)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
