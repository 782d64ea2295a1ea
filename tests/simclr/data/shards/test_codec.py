import numpy as np
import pytest
import torch

from simclr.data.shards.codec import decode_pil, decode_tensor, encode_image, probe, sniff_format


@pytest.mark.parametrize("shape,mode", [((5, 7), "L"), ((5, 7, 3), "RGB")])
def test_png_round_trip_is_lossless_and_deterministic(shape, mode) -> None:
    a = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    data = encode_image(a, "png")
    assert data == encode_image(a, "png") and sniff_format(data) == "png"
    assert probe(data) == (mode, 7, 5, False)
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


def _png16(a16: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a16.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_16_bit_grey_images_are_scaled_not_clipped() -> None:
    """A 16-bit PNG (microscopy, medical) came out all white (PIL clips at 255) or as a uint16 tensor that the
    batched augmentation refused."""
    a16 = np.linspace(1000, 60000, 48).reshape(6, 8)
    data = _png16(a16)
    want = np.rint(a16 / 257).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(decode_pil(data, "L")), want)
    t = decode_tensor(data, "L")
    assert t.dtype == torch.uint8 and torch.equal(t[0], torch.from_numpy(want))
    import io

    from PIL import Image

    from simclr.data.shards.codec import to_storable

    img = to_storable(Image.open(io.BytesIO(data)), "jpeg")  # what the writer encodes
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), want)


def test_a_16_bit_png_is_written_as_8_bits_even_when_png_passes_through(tmp_path) -> None:
    from simclr.data.shards.shardset import open_split
    from simclr.data.shards.write import write_shards

    data = _png16(np.full((6, 8), 30000))
    assert probe(data)[3]  # wide: more than 8 bits per pixel
    write_shards([("k0", data, 0)], tmp_path, split="train", image_format="png", class_names=["c"])
    stored = open_split(tmp_path, "train").read(0)
    assert not probe(stored)[3] and int(np.asarray(decode_pil(stored, "L")).mean()) == round(30000 / 257)
