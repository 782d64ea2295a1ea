import numpy as np
import pytest
import torch

from simclr.data.codec import decode_pil, decode_tensor, encode_image, probe, sniff_format


@pytest.mark.parametrize("shape,mode", [((5, 7), "L"), ((5, 7, 3), "RGB")])
def test_png_round_trip_is_lossless_and_deterministic(shape, mode) -> None:
    a = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    data = encode_image(a, "png")
    assert data == encode_image(a, "png") and sniff_format(data) == "png"
    assert probe(data) == (mode, 7, 5)
    np.testing.assert_array_equal(np.asarray(decode_pil(data, mode)), a)
    t = decode_tensor(data, mode)
    expect = torch.from_numpy(a).reshape(5, 7, -1).permute(2, 0, 1)
    assert torch.equal(t, expect)


def test_jpeg_and_gray_to_rgb_and_corrupt() -> None:
    a = np.full((8, 8), 100, np.uint8)
    jpg = encode_image(a, "jpeg")
    assert sniff_format(jpg) == "jpeg"
    assert decode_tensor(jpg, "RGB").shape == (3, 8, 8)
    with pytest.raises(Exception):
        decode_tensor(jpg[:40], "L")
    with pytest.raises(ValueError, match="image_format"):
        encode_image(a, "gif")
