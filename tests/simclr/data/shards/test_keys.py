import pytest

from simclr.data.errors import BadSampleError
from simclr.data.shards.keys import check_key, key_hash, sanitize_key


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "a\nb", "/abs", "a//b", "../x", "x/", "a\\b", 5, "k" * 201,
                                 "d.x/a.b", "a/./b", "a/../b"])
def test_bad_keys_are_rejected(bad) -> None:
    with pytest.raises(BadSampleError):
        check_key(bad)


def test_good_keys_sanitising_and_hash() -> None:
    assert check_key("n01440764/n01440764_10026") == "n01440764/n01440764_10026"
    assert sanitize_key("cls/img.v2 copy") == "cls/img_v2_copy"
    assert key_hash("a") == key_hash("a") != key_hash("a", salt=1)
    assert key_hash("train_00000") == 6581602397803241595  # pinned: never Python's salted hash()


def test_a_dot_in_a_folder_part_is_a_valid_key() -> None:
    """WebDataset splits a member name at the first '.' of its file name only: ``v1.2/s0001.jpg`` is sample
    ``v1.2/s0001``."""
    assert check_key("v1.2/s0001") == "v1.2/s0001"
    assert sanitize_key("v1.2/s0001") == "v1_2/s0001"  # ImageFolder keys keep their old spelling
