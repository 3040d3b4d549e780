"""Tests of nn.save / nn.load: round trips, nested state, atomic writes, refusing
pickles, truncated and missing files, and loading into a model."""
import os
import pickle

import numpy as np
import pytest

import nn
from nn.io import CheckpointError


def _model():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_flat_state_dict_round_trip_and_plain_npz_keys(tmp_path):
    model = _model()
    path = tmp_path / "model.npz"
    nn.save(model.state_dict(), path)
    loaded = nn.load(path)
    assert list(loaded) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded[key], value) and loaded[key].dtype == value.dtype
    with np.load(path, allow_pickle=False) as raw:  # an ordinary npz, readable by NumPy
        assert "0.weight" in raw.files and "__structure__" in raw.files
    fresh = _model()
    fresh.load_state_dict(loaded)
    x = np.ones((2, 3), np.float32)
    assert np.array_equal(fresh(x).data, model(x).data)


def test_nested_state_round_trip_exact_types(tmp_path):
    model = _model()
    opt = nn.optim.Adam(model.parameters(), lr=0.01)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    state = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
        "best": 0.125, "name": "run-1", "note": None, "flags": (True, False),
        "history": [1.0, float("inf")], "counter": np.int64(7), "t": nn.Tensor(np.arange(3.0)),
    }
    nn.save(state, tmp_path / "ckpt.npz")
    loaded = nn.load(tmp_path / "ckpt.npz")
    assert loaded["epoch"] == 3 and isinstance(loaded["epoch"], int)
    assert loaded["best"] == 0.125 and loaded["name"] == "run-1" and loaded["note"] is None
    assert loaded["flags"] == (True, False) and loaded["history"] == [1.0, float("inf")]
    assert loaded["counter"] == 7 and isinstance(loaded["counter"], np.int64)
    assert np.array_equal(loaded["t"], np.arange(3.0))
    assert set(loaded["optimizer"]["state"]) == {0, 1, 2, 3}  # int keys survive
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert np.array_equal(loaded["optimizer"]["state"][2]["exp_avg"], opt.state_dict()["state"][2]["exp_avg"])
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as raw:
        assert "model/0.weight" in raw.files and "optimizer/state/0/exp_avg" in raw.files


def test_empty_and_zero_d_arrays(tmp_path):
    state = {"empty": np.zeros((0, 4), np.float32), "scalar": np.array(2.5), "ints": np.arange(3)}
    nn.save(state, tmp_path / "a.npz")
    loaded = nn.load(tmp_path / "a.npz")
    assert loaded["empty"].shape == (0, 4) and loaded["empty"].dtype == np.float32
    assert loaded["scalar"].shape == () and loaded["scalar"] == 2.5
    assert loaded["ints"].dtype == state["ints"].dtype


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    nn.save({"w": np.ones(3)}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        nn.save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    assert np.array_equal(nn.load(path)["w"], np.ones(3))  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


def test_save_writes_exact_path_and_overwrites(tmp_path):
    path = tmp_path / "weights.ckpt"
    nn.save({"a": np.ones(1)}, path)
    nn.save({"a": np.zeros(1)}, str(path))
    assert os.listdir(tmp_path) == ["weights.ckpt"]
    assert nn.load(path)["a"][0] == 0


def test_plain_npz_without_manifest_loads_flat(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.ones(2), b=np.arange(3))
    loaded = nn.load(path)
    assert set(loaded) == {"a", "b"} and np.array_equal(loaded["b"], np.arange(3))


@pytest.mark.parametrize("value, exc, match", [
    ({"a/b": np.ones(1)}, ValueError, "must not contain"),
    ({(1, 2): np.ones(1)}, TypeError, "keys must be str or int"),
    ({"obj": np.array([{}, 1], dtype=object)}, TypeError, "object arrays"),
    ({"f": lambda: 0}, TypeError, "cannot save a function"),
    ([np.ones(1)], TypeError, "expects a dict"),
])
def test_save_rejects_unsupported_values(tmp_path, value, exc, match):
    with pytest.raises(exc, match=match):
        nn.save(value, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def test_save_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nn.save({"a": np.ones(1)}, tmp_path / "nope" / "x.npz")


def test_load_missing_file_names_path(tmp_path):
    path = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        nn.load(path)


def test_load_truncated_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    nn.save({"w": np.random.default_rng(0).normal(size=(64, 64))}, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 10):
        truncated = tmp_path / f"cut{cut}.npz"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.npz"):
            nn.load(truncated)


def test_load_refuses_pickles(tmp_path):
    pickled = tmp_path / "evil.pkl"
    pickled.write_bytes(pickle.dumps({"w": np.ones(3)}))
    with pytest.raises(CheckpointError, match="pickled"):
        nn.load(pickled)
    obj_npz = tmp_path / "obj.npz"
    np.savez(obj_npz, w=np.array([{"x": 1}], dtype=object))
    with pytest.raises(CheckpointError, match=r"obj\.npz.*pickle"):
        nn.load(obj_npz)
    assert issubclass(CheckpointError, ValueError)


def test_load_garbage_and_npy(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(CheckpointError, match="garbage.npz"):
        nn.load(garbage)
    npy = tmp_path / "single.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(CheckpointError, match="single .npy"):
        nn.load(npy)


def test_mismatched_checkpoint_names_key(tmp_path):
    nn.save(nn.Sequential(nn.Linear(3, 5)).state_dict(), tmp_path / "c.npz")
    model = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"0\.weight.*shape"):
        model.load_state_dict(nn.load(tmp_path / "c.npz"))
