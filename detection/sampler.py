"""Balanced sampling of positive and negative anchors for the training losses.

An image yields tens of thousands of anchors, of which a handful are positives.
Faster R-CNN trains the RPN on a mini-batch of 256 anchors per image with up to
half positives, filled up with random negatives (Ren et al., NeurIPS 2015,
section 3.1.3); the Fast R-CNN head samples 512 proposals with 25% positives.
Without it the loss is swamped by easy background (RetinaNet solves the same
imbalance differently, with the focal loss).
"""
import numpy as np

from nn._checks import check_int, check_probability
from nn.random import get_generator
from nn.tensor import as_array

__all__ = ["BalancedPositiveNegativeSampler"]


class BalancedPositiveNegativeSampler:
    """Sample a fixed-size, balanced set of anchors per image.

    Per image: ``num_pos = min(#positives, int(batch_size_per_image · positive_fraction))``
    positives and ``num_neg = min(#negatives, batch_size_per_image - num_pos)`` negatives,
    each drawn uniformly without replacement (torchvision's rule).

    Args:
        batch_size_per_image (int): anchors sampled per image, ``>= 0``.
        positive_fraction (float): largest share of positives, in ``[0, 1]``.
        generator (np.random.Generator, int or None): randomness; an int seeds a new
            generator, None uses ``nn``'s default generator (``nn.manual_seed``).
    """

    def __init__(self, batch_size_per_image, positive_fraction, generator=None):
        self.batch_size_per_image = check_int(batch_size_per_image, "batch_size_per_image", 0)
        self.positive_fraction = check_probability(positive_fraction, "positive_fraction")
        self.generator = generator if generator is None else get_generator(generator)

    def __repr__(self):
        return (f"BalancedPositiveNegativeSampler("
                f"batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")

    def __call__(self, matched_idxs):
        """Choose the anchors of each image.

        Args:
            matched_idxs (list of ndarray[N_i]): per image, integer labels of its
                anchors: ``>= 1`` positive, ``0`` negative, ``< 0`` ignored (e.g. -1 / -2
                flags). A single array is treated as a batch of one image.
        Returns:
            tuple(list of ndarray[N_i] bool, list of ndarray[N_i] bool): per image, the
            mask of sampled positives and the mask of sampled negatives.
        """
        single = isinstance(matched_idxs, np.ndarray)
        images = [matched_idxs] if single else list(matched_idxs)
        images = [as_array(labels) for labels in images]
        for i, labels in enumerate(images):
            integer = np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_
            if labels.ndim != 1 or not integer:
                raise ValueError(
                    f"matched_idxs[{i}] must be a 1-D integer array, got shape {labels.shape} "
                    f"and dtype {labels.dtype}"
                )
        rng = get_generator(self.generator)
        sizes = [labels.size for labels in images]
        if not images or sum(sizes) == 0:
            pos = [np.zeros(n, dtype=bool) for n in sizes]
            return (pos, [p.copy() for p in pos])

        # All images at once: each anchor gets an image id, a kind (0 positive,
        # 1 negative, 2 ignored) and a random key; sorting by (image, kind, key) puts the
        # anchors of each (image, kind) group in a uniformly random order, and the first
        # `quota` of every group are the sample.
        labels = np.concatenate(images).astype(np.int64)                     # (T,)
        image_id = np.repeat(np.arange(len(images)), sizes)                  # (T,)
        kind = np.where(labels >= 1, 0, np.where(labels == 0, 1, 2))         # (T,)
        keys = rng.random(labels.size)
        order = np.lexsort((keys, kind, image_id))                            # (T,)
        group = image_id[order] * 3 + kind[order]                             # (T,) sorted
        group_start = np.searchsorted(group, group, side="left")
        rank = np.arange(labels.size) - group_start                           # rank inside group

        counts = np.bincount(image_id * 3 + kind, minlength=3 * len(images)).reshape(-1, 3)
        num_pos = np.minimum(counts[:, 0], int(self.batch_size_per_image * self.positive_fraction))
        num_neg = np.minimum(counts[:, 1], self.batch_size_per_image - num_pos)
        quota = np.stack([num_pos, num_neg, np.zeros_like(num_pos)], axis=1).reshape(-1)  # (3·B,)

        chosen = np.zeros(labels.size, dtype=bool)
        chosen[order] = rank < quota[group]
        positive = np.split(chosen & (kind == 0), np.cumsum(sizes)[:-1])
        negative = np.split(chosen & (kind == 1), np.cumsum(sizes)[:-1])
        return positive, negative
