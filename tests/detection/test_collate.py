"""collate_detection: images stacked, a variable number of boxes per image kept apart."""
import numpy as np
import pytest

from detection.datasets import collate_detection
from nn.data import DataLoader, Dataset


class Boxes(Dataset):
    """Images of one size with a variable number of boxes each."""

    def __init__(self, n=7):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.full((4, 5, 3), i, dtype=np.float32)
        boxes = np.tile(np.array([[0, 0, 2, 2]], np.float32), (i % 3, 1))
        return image, {"boxes": boxes, "labels": np.arange(i % 3, dtype=np.int64)}


def test_collate_detection_keeps_variable_targets():
    loader = DataLoader(Boxes(7), batch_size=3, collate_fn=collate_detection)
    batches = list(loader)
    assert len(batches) == 3
    images, targets = batches[0]
    assert images.shape == (3, 4, 5, 3) and images.dtype == np.float32
    assert [t["boxes"].shape for t in targets] == [(0, 4), (1, 4), (2, 4)]
    assert targets[2]["labels"].dtype == np.int64
    images, targets = batches[-1]
    assert images.shape == (1, 4, 5, 3) and len(targets) == 1
    with pytest.raises(ValueError, match="share one size"):
        collate_detection([(np.zeros((2, 2, 3)), {}), (np.zeros((3, 2, 3)), {})])
    with pytest.raises(ValueError, match="pair"):
        collate_detection([np.zeros((2, 2, 3))])
