"""Tests of nn.data: datasets, collate functions and the DataLoader."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.data import DataLoader, Dataset, Subset, TensorDataset, default_collate


@given(n=st.integers(0, 23), batch_size=st.integers(1, 6), drop_last=st.booleans(),
       shuffle=st.booleans())
def test_batches_cover_dataset(n, batch_size, drop_last, shuffle):
    data = TensorDataset(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))
    loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader)
    expected = n // batch_size if drop_last else -(-n // batch_size)
    assert len(loader) == expected
    seen = np.concatenate([b[1] for b in batches]) if batches else np.zeros(0, int)
    assert len(seen) == (expected * batch_size if drop_last else n)
    assert len(set(seen.tolist())) == len(seen)
    for x, y in batches:
        assert x.shape == (len(y), 1) and x.dtype == np.float32
        assert np.array_equal(x[:, 0], y)
        if drop_last:
            assert len(y) == batch_size
    if not shuffle:
        assert np.array_equal(seen, np.arange(len(seen)))


def test_seeded_shuffle_reproducible_and_new_each_epoch():
    data = TensorDataset(np.arange(50))
    a = DataLoader(data, batch_size=50, shuffle=True, seed=3)
    b = DataLoader(data, batch_size=50, shuffle=True, seed=3)
    a1, a2 = next(iter(a))[0], next(iter(a))[0]
    b1, b2 = next(iter(b))[0], next(iter(b))[0]
    assert np.array_equal(a1, b1) and np.array_equal(a2, b2)
    assert not np.array_equal(a1, a2)
    assert sorted(a1.tolist()) == list(range(50))
    c = DataLoader(data, batch_size=50, shuffle=True, seed=3)
    c.set_epoch(1)
    assert np.array_equal(next(iter(c))[0], a2)
    assert not np.array_equal(next(iter(DataLoader(data, 50, True, seed=4)))[0], a1)


def test_unseeded_shuffle_follows_manual_seed():
    data = TensorDataset(np.arange(30))
    nn.manual_seed(11)
    first = next(iter(DataLoader(data, 30, shuffle=True)))[0]
    nn.manual_seed(11)
    second = next(iter(DataLoader(data, 30, shuffle=True)))[0]
    assert np.array_equal(first, second)


def test_default_collate_structures():
    batch = [(np.ones((2, 2), np.float32) * i, i, 0.5 * i, {"k": i}, "s", True) for i in range(3)]
    images, ints, floats, dicts, strings, flags = default_collate(batch)
    assert images.shape == (3, 2, 2) and images.dtype == np.float32
    assert ints.dtype == np.int64 and np.array_equal(ints, [0, 1, 2])
    assert floats.dtype == np.float32
    assert dicts == [{"k": 0}, {"k": 1}, {"k": 2}]
    assert strings == ["s", "s", "s"] and flags.dtype == bool
    nested = default_collate([[np.zeros(2), (1, 2)], [np.ones(2), (3, 4)]])
    assert isinstance(nested, list) and nested[0].shape == (2, 2)
    assert np.array_equal(nested[1][0], [1, 3]) and np.array_equal(nested[1][1], [2, 4])
    tensors = default_collate([nn.Tensor(np.zeros(3)), nn.Tensor(np.ones(3))])
    assert tensors.shape == (2, 3)
    assert default_collate([np.float64(1.5), np.float64(2)]).dtype == np.float64


def test_default_collate_errors():
    with pytest.raises(ValueError, match="collate_fn"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match="non-empty"):
        default_collate([])
    with pytest.raises(TypeError, match="cannot batch"):
        default_collate([object(), object()])
    with pytest.raises(ValueError, match="numbers of fields"):
        default_collate([(1, 2), (1,)])


def test_datasets_and_subset():
    data = TensorDataset(np.arange(10), nn.Tensor(np.arange(10.0)))
    sub = Subset(data, [9, 0, 3])
    assert len(sub) == 3 and sub[0][0] == 9 and sub[2][1] == 3.0
    with pytest.raises(IndexError, match="out of range"):
        Subset(data, [10])
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataset(np.zeros(3), np.zeros(4))
    with pytest.raises(NotImplementedError):
        len(Dataset())


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.0), ValueError, "batch_size"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(collate_fn=3), TypeError, "collate_fn"),
])
def test_loader_bad_args(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DataLoader(TensorDataset(np.zeros(3)), **kwargs)
    with pytest.raises(TypeError, match="__len__"):
        DataLoader(5)


# ------------------------------------------------------------- position
def _ids(batches):
    return [b[0].tolist() for b in batches]


@pytest.mark.parametrize("stop", [0, 1, 3, 4, 5, 9])
def test_a_resumed_loader_draws_the_batches_of_an_uninterrupted_one(stop, tmp_path):
    data = TensorDataset(np.arange(11))
    whole = DataLoader(data, batch_size=3, shuffle=True, seed=5)  # 4 batches per epoch
    expected = _ids([b for _ in range(3) for b in whole])  # three epochs
    first = DataLoader(data, batch_size=3, shuffle=True, seed=5)
    stream = iter(first)
    drawn = []
    for _ in range(stop):  # an endless stream over epochs, stopped after `stop` batches
        batch = next(stream, None)
        if batch is None:
            stream = iter(first)
            batch = next(stream)
        drawn.append(batch)
    nn.save({"loader": first.state_dict()}, tmp_path / "position.npz")
    # A new process: another seed drawn, the position read back from the file.
    second = DataLoader(data, batch_size=3, shuffle=True)
    second.load_state_dict(nn.load(tmp_path / "position.npz")["loader"])
    rest = []
    while len(drawn) + len(rest) < len(expected):
        rest += list(second)
    assert _ids(drawn) + _ids(rest) == expected
    assert second.state_dict() == {"epoch": 2, "batch": 4, "seed": 5}


def test_loader_position_counts_drawn_batches():
    loader = DataLoader(TensorDataset(np.arange(7)), batch_size=2)  # 4 batches, the last of 1
    assert loader.state_dict() == {"epoch": 0, "batch": 0, "seed": loader.seed}
    stream = iter(loader)
    next(stream)
    next(stream)
    assert loader.state_dict()["batch"] == 2
    assert [b[0].tolist() for b in stream] == [[4, 5], [6]]
    assert (loader.epoch, loader.batch) == (0, 4)
    assert [b[0].tolist() for b in loader][0] == [0, 1]  # the next loop: epoch 1
    assert loader.epoch == 1
    loader.set_epoch(7)
    assert loader.state_dict()["epoch"] == 7 and loader.state_dict()["batch"] == 0


@pytest.mark.parametrize("state, match", [
    ({"epoch": 0, "batch": 1_000_000_000, "seed": 1}, "beyond"),
    ({"epoch": -1, "batch": 0, "seed": 1}, "epoch"),
    ({"epoch": 0, "batch": 1.5, "seed": 1}, "batch"),
    ({"epoch": 0, "batch": 0, "seed": True}, "seed"),
    ({"epoch": 0, "batch": 0}, "seed"),
    ([0, 0, 1], "dict"),
])
def test_loader_refuses_a_bad_position(state, match):
    loader = DataLoader(TensorDataset(np.arange(7)), batch_size=2, seed=3)
    with pytest.raises(ValueError, match=match):
        loader.load_state_dict(state)
    assert loader.state_dict() == {"epoch": 0, "batch": 0, "seed": 3}  # unchanged
    with pytest.raises(ValueError, match="epoch"):
        loader.set_epoch(-2)
