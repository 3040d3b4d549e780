"""Batching detection samples: images stacked, targets kept one per image.

A detection sample is ``(image, target)``: the image ``(H, W, C)`` and a dict with a
variable number of objects (``"boxes" (K_i, 4)``, ``"labels" (K_i,)``, masks...).
The images of a batch share one size (the dataset's transforms resize them) and are
stacked into ``(N, H, W, C)``; the targets cannot be stacked and stay a list. Pass
``collate_detection`` as an ``nn.data.DataLoader``'s ``collate_fn``.
"""
import numpy as np

from nn.tensor import Tensor

__all__ = ["collate_detection"]


def collate_detection(batch):
    """Collate ``(image, target)`` samples with a variable number of objects per image.

    Args:
        batch (list of tuple): ``(image ndarray[H, W, C], target dict)`` samples, all
            images of the same size.
    Returns:
        tuple: ``(images ndarray[N, H, W, C], targets list of N dicts)``; the targets
        are the samples' own dicts (e.g. ``"boxes" (K_i, 4)``, ``"labels" (K_i,)``).
    """
    if not isinstance(batch, (list, tuple)) or len(batch) == 0:
        raise ValueError("collate_detection expects a non-empty list of (image, target) samples")
    images, targets = [], []
    for i, sample in enumerate(batch):
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise ValueError(f"collate_detection: sample {i} must be an (image, target) pair")
        image, target = sample
        images.append(image.data if isinstance(image, Tensor) else np.asarray(image))
        targets.append(target)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"collate_detection: images in a batch must share one size, got "
                         f"{sorted(shapes)}; resize them in the dataset transform")
    return np.stack(images), targets
