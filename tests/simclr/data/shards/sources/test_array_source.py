import numpy as np
import pytest

from simclr.data.errors import BadSampleError
from simclr.data.shards.sources import array_samples, npz_samples


def test_keys_labels_and_unlabelled() -> None:
    src = array_samples(np.zeros((3, 2, 2, 3), np.uint8), [1, -1, 0], ["x", "y"], key_prefix="p")
    assert [(k, lab) for k, _, lab in src] == [("p_000000", 1), ("p_000001", None), ("p_000002", 0)]
    assert array_samples(np.zeros((2, 2, 2), np.uint8)).class_names == []


def test_bad_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        array_samples(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        array_samples(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        array_samples(np.zeros((2, 2, 2), np.uint8), [1])
    with pytest.raises(BadSampleError, match="label 5") as exc:
        array_samples(np.zeros((2, 2, 2), np.uint8), [0, 5], ["a", "b"])
    assert "sample_000001" in str(exc.value)


def test_npz(tmp_path) -> None:
    p = tmp_path / "a.npz"
    np.savez(p, val_images=np.zeros((4, 3, 3), np.uint8), val_labels=np.array([0, 1, 0, 1]),
             class_names=np.array(["u", "v"]))
    src = npz_samples(p, "val")
    assert len(src) == 4 and src.class_names == ["u", "v"] and src[0][0] == "val_000000"
    with pytest.raises(ValueError, match="train_images"):
        npz_samples(p, "train")


def test_balanced_subset_spreads_over_classes_in_source_order() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, -1, 2])  # -1: unlabelled, its own group
    src = array_samples(np.zeros((8, 2, 2), np.uint8), labels, ["a", "b", "c"])
    sub = src.balanced_subset(5)
    assert [k for k, _, _ in sub] == [src[i][0] for i in (0, 1, 4, 6, 7)]
    assert [lab for _, _, lab in sub] == [0, 0, 1, None, 2]
    assert src.label_at(6) is None and src.label_at(7) == 2
    assert src.balanced_subset(8) is src and len(src.balanced_subset(7)) == 7
