"""Datasets and a minimal DataLoader: batching, seeded shuffling, collate functions.

A ``Dataset`` is anything with ``__len__`` and ``__getitem__(i) -> sample``. The
``DataLoader`` groups samples into batches and turns each list of samples into
arrays with a *collate function*:

- ``default_collate`` stacks ndarrays and numbers along a new batch axis, recursing
  into tuples/lists (``(image, label)`` pairs become ``(images[N, ...], labels[N])``),
  and keeps dicts (per-image targets) as a list of dicts.
- any callable ``list of samples -> batch`` can replace it (detection batches
  keep a variable number of boxes per image: ``detection.datasets.collate_detection``).

Shuffling uses ``np.random.default_rng([seed, epoch])``: each pass over the loader is a
new epoch with a different order, and the same seed reproduces every epoch's order.
The loader knows where it stands, ``(epoch, batch)``: ``state_dict()`` saves that
position with the seed and ``load_state_dict`` restores it, so a training run resumed
from a checkpoint draws exactly the batches an uninterrupted run would have drawn.
Progress bars belong to the training loop.
"""
import math
import numbers

import numpy as np

from nn.random import get_generator
from nn.tensor import Tensor

__all__ = ["Dataset", "TensorDataset", "Subset", "DataLoader", "default_collate"]


class Dataset:
    """Base class: subclasses define ``__len__`` and ``__getitem__(index)``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


class TensorDataset(Dataset):
    """Samples are the ``i``-th rows of equally long arrays: ``(x[i], y[i], ...)``.

    Args:
        *arrays (ndarray or Tensor): all with the same first dimension.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        arrays = tuple(a.data if isinstance(a, Tensor) else np.asarray(a) for a in arrays)
        lengths = {len(a) for a in arrays}
        if any(a.ndim == 0 for a in arrays) or len(lengths) != 1:
            raise ValueError(f"TensorDataset arrays must share their first dimension, got shapes "
                             f"{[a.shape for a in arrays]}")
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        n = len(dataset)
        bad = [i for i in self.indices if not -n <= i < n]
        if bad:
            raise IndexError(f"Subset indices {bad[:5]} are out of range for a dataset of length {n}")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]


# ----------------------------------------------------------------- collate
def default_collate(batch):
    """Turn a list of samples into a batch.

    - ndarrays (and Tensors) of equal shape -> ``np.stack`` (new leading axis N);
    - Python/NumPy numbers -> a 1-D array (bools, ints -> int64, floats -> float32
      unless they are NumPy float64 scalars);
    - tuples/lists -> the same container of collated fields;
    - dicts and strings -> a list (variable-size targets stay per sample).

    Args:
        batch (list): samples, all of the same structure.
    Returns:
        the collated batch.
    """
    if not isinstance(batch, (list, tuple)) or len(batch) == 0:
        raise ValueError("default_collate expects a non-empty list of samples")
    first = batch[0]
    if isinstance(first, Tensor):
        batch = [b.data if isinstance(b, Tensor) else b for b in batch]
        first = batch[0]
    if isinstance(first, np.ndarray):
        shapes = {np.shape(b) for b in batch}
        if len(shapes) != 1:
            raise ValueError(f"cannot stack arrays of different shapes {sorted(shapes)} into a batch; "
                             f"resize them in the dataset or pass a collate_fn that keeps them apart "
                             f"(detection.datasets.collate_detection for images and boxes)")
        return np.stack(batch)
    if isinstance(first, (bool, np.bool_)):
        return np.asarray(batch, dtype=bool)
    if isinstance(first, (numbers.Integral, np.integer)):
        return np.asarray(batch, dtype=np.int64)
    if isinstance(first, np.floating):
        return np.asarray(batch, dtype=first.dtype)
    if isinstance(first, numbers.Real):
        return np.asarray(batch, dtype=np.float32)
    if isinstance(first, (str, dict)) or first is None:
        return list(batch)
    if isinstance(first, (tuple, list)):
        lengths = {len(b) for b in batch}
        if len(lengths) != 1:
            raise ValueError(f"samples have different numbers of fields: {sorted(lengths)}")
        fields = [default_collate([sample[i] for sample in batch]) for i in range(len(first))]
        return tuple(fields) if isinstance(first, tuple) else fields
    raise TypeError(f"default_collate cannot batch samples of type {type(first).__name__}")


# -------------------------------------------------------------- DataLoader
class DataLoader:
    """Iterate over a dataset in batches, one epoch per ``for`` loop.

    Args:
        dataset (Dataset): indexable with ``len``.
        batch_size (int): samples per batch (>= 1).
        shuffle (bool): a new random order every epoch.
        collate_fn (callable, optional): list of samples -> batch; default ``default_collate``.
        drop_last (bool): drop the last, incomplete batch.
        seed (int, optional): seed of the shuffling; when None it is drawn once from the
            default generator (so ``nn.manual_seed`` makes the run reproducible).

    ``len(loader)`` is the number of batches per epoch. The position ``(epoch, batch)``
    is the next batch to draw: a ``for`` loop runs from there to the end of the epoch
    (a loop left early continues where it stopped), and the loop after a finished
    epoch starts the next one.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, collate_fn=None, drop_last=False,
                 seed=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"dataset must define __len__ and __getitem__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
        if seed is not None and not _is_count(seed):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.drop_last = bool(drop_last)
        self.seed = int(get_generator().integers(2**63)) if seed is None else int(seed)
        self.epoch = 0  # the epoch of the next batch
        self.batch = 0  # the index of the next batch in that epoch

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch):
        """Make the next iteration start at the beginning of ``epoch``."""
        if not _is_count(epoch):
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch, self.batch = int(epoch), 0

    def indices(self, epoch):
        """The sample order of ``epoch`` (int64 array)."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def __iter__(self):
        if self.batch >= len(self):  # the previous loop ended its epoch
            self.epoch, self.batch = self.epoch + 1, 0
        order = self.indices(self.epoch)
        while self.batch < len(self):
            start = self.batch * self.batch_size
            samples = [self.dataset[int(i)] for i in order[start:start + self.batch_size]]
            self.batch += 1  # counted before the yield: the position is the *next* batch
            yield self.collate_fn(samples)

    # ---------------------------------------------------------------- position
    def state_dict(self):
        """The position for a checkpoint: ``{"epoch": int, "batch": int, "seed": int}``."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state):
        """Continue from a position saved by ``state_dict`` (checked before it is applied).

        Raises:
            ValueError: a missing entry, or a value that is not a non-negative int, or a
                batch index beyond this loader's ``len`` (a state of another dataset).
        """
        if not isinstance(state, dict) or set(state) != {"epoch", "batch", "seed"}:
            raise ValueError(f"DataLoader state must be a dict with 'epoch', 'batch' and 'seed', "
                             f"got {state!r}")
        for name in ("epoch", "batch", "seed"):
            if not _is_count(state[name]):
                raise ValueError(f"DataLoader state: {name} must be a non-negative int, "
                                 f"got {state[name]!r}")
        if state["batch"] > len(self):
            raise ValueError(f"DataLoader state: batch {state['batch']} is beyond the "
                             f"{len(self)} batches of an epoch")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.seed = int(state["seed"])


def _is_count(value):
    """True for a non-negative int (Python or NumPy, not bool)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 0
