"""EvalBatches: evaluation batches decoded once and replayed from memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from simclr.train.evaluate import EvalBatches, embed


class CountingLoader:
    """Five batches of 4 fixed images; counts how often it is read (each read = decoding the split again)."""

    def __init__(self) -> None:
        self.reads = 0

    def epoch_iter(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        self.reads += 1
        for i in range(5):
            yield {"image": torch.full((4, 1, 2, 2), float(i)), "label": torch.arange(4) + 4 * i}


def test_a_memory_bank_of_the_first_samples_is_decoded_once() -> None:
    """embed(limit=8) stops after two batches: the generator never finished, nothing was cached, and the
    kNN bank was decoded again at every evaluation."""
    loader = CountingLoader()
    bank = EvalBatches(loader, max_samples=8)
    enc = lambda x: x.flatten(1)  # noqa: E731
    first = embed(enc, bank(), torch.device("cpu"), channels_last=False, limit=8)
    again = embed(enc, bank(), torch.device("cpu"), channels_last=False, limit=8)
    assert loader.reads == 1 and torch.equal(first[1], again[1]) and first[1].tolist() == list(range(8))
    whole = EvalBatches(loader)  # without a limit: the whole split, cached after the first full pass
    assert sum(int(b["label"].numel()) for b in whole()) == 20
    assert sum(int(b["label"].numel()) for b in whole()) == 20 and loader.reads == 2
