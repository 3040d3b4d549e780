"""Tests of nn.save / nn.load: round trips, nested state, atomic writes, refusing
pickles, truncated and missing files, and loading into a model."""
import io
import json
import os
import pickle
import zipfile

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


# ----------------------------------------------------- a writer killed mid-save
# The child saves a checkpoint whose first array is 32 MB; a hook in numpy's npy writer
# reports when that array is written and then holds the save open, so the SIGKILL
# lands in the middle of nn.save for certain (no race with a save that finishes first).
_KILLED_WRITER = r"""
import sys, time
import numpy as np
import numpy.lib.format as npy_format
import nn

write_array = npy_format.write_array
def write_then_hold(*args, **kwargs):
    write_array(*args, **kwargs)
    print("written", flush=True)
    time.sleep(120)
npy_format.write_array = write_then_hold
nn.save({"a": np.full(2 ** 22, 2.0), "b": np.arange(3.0)}, sys.argv[1])
"""


def test_save_killed_by_sigkill_leaves_a_named_temporary_that_the_next_save_removes(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "ckpt.npz"
    nn.save({"a": np.ones(2)}, target)                       # the previous checkpoint
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "written"  # inside nn.save now
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()

    temporaries = [n for n in os.listdir(tmp_path) if n != "ckpt.npz"]
    assert len(temporaries) == 1
    name = temporaries[0]
    assert name.startswith(f"ckpt.npz.tmp-{child.pid}-")    # names its target and writer
    assert os.path.getsize(tmp_path / name) > 2 ** 25       # the 32 MB array is in it
    assert np.array_equal(nn.load(target)["a"], np.ones(2))  # the old checkpoint is whole

    nn.save({"a": np.zeros(2)}, target)                      # the next save cleans up
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert np.array_equal(nn.load(target)["a"], np.zeros(2))


def test_a_temporary_of_a_live_writer_or_of_another_target_is_kept(tmp_path):
    live = tmp_path / f"ckpt.npz.tmp-{os.getpid()}-0123abcd"   # this process is alive
    other = tmp_path / "other.npz.tmp-999999999-0123abcd"
    live.write_bytes(b"partial")
    other.write_bytes(b"partial")
    nn.save({"a": np.ones(1)}, tmp_path / "ckpt.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.npz", live.name, other.name])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_checkpoints_and_figures_follow_the_umask(tmp_path, umask, mode):
    from matplotlib.figure import Figure
    from detection.metrics.plot import save_figure

    previous = os.umask(umask)
    try:
        nn.save({"a": np.ones(1)}, tmp_path / "ckpt.npz")
        figure = Figure(figsize=(1, 1))
        figure.add_subplot().plot([0, 1])
        save_figure(figure, tmp_path / "curve.png")
        nn.io.atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(previous)
    for name in ("ckpt.npz", "curve.png", "metrics.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name


# ------------------------------------------------------------ hostile files
def test_load_text_file_is_not_an_npz_archive(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("epoch 3, loss 0.25\n")
    with pytest.raises(CheckpointError, match=r"notes\.npz.*not an \.npz") as info:
        nn.load(text)
    assert "pickle" not in str(info.value)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.npz.*empty"):
        nn.load(empty)


def _with_manifest(path, manifest, **arrays):
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    np.savez(path, __structure__=np.array(text), **arrays)


def _nested(depth):
    spec = {"t": "none"}
    for _ in range(depth):
        spec = {"t": "list", "items": [spec]}
    return spec


_HEADER = {"format": "detseg-checkpoint", "version": 1}


@pytest.mark.parametrize("manifest, match", [
    ([1, 2], "manifest"),
    ("null", "manifest"),
    ({"format": "detseg-checkpoint", "version": "1", "root": {"t": "none"}}, "version"),
    (dict(_HEADER), "root"),
    (dict(_HEADER, root=5), "entry"),
    (dict(_HEADER, root={"t": "dict", "items": 5}), "items"),
    (dict(_HEADER, root={"t": "dict", "items": [["a", "str"]]}), "items"),
    (dict(_HEADER, root={"t": "dict", "items": [["x", "int", {"t": "none"}]]}), "int key"),
    (dict(_HEADER, root={"t": "dict", "items": [["a", "blob", {"t": "none"}]]}), "key kind"),
    (dict(_HEADER, root={"t": "float", "v": "abc"}), "float"),
    (dict(_HEADER, root={"t": "int", "v": "7"}), "int"),
    (dict(_HEADER, root={"t": "bool", "v": 1}), "bool"),
    (dict(_HEADER, root={"t": "array", "k": ["w"]}), "array"),
    (dict(_HEADER, root={"t": "array", "k": "missing"}), "missing"),
    (dict(_HEADER, root={"t": "npscalar", "k": "w"}), "scalar"),
    (dict(_HEADER, root={"t": "nope"}), "unknown entry type"),
    pytest.param(dict(_HEADER, root=_nested(100)), "deeper", id="nested-100"),
    pytest.param('{"format": "detseg-checkpoint", "version": 1, "root": '
                 + '{"t": "list", "items": [' * 10_000 + '{"t": "none"}' + "]}" * 10_000 + "}",
                 "deeper", id="nested-10000"),
    pytest.param("[" * 100_000 + "]" * 100_000, "manifest", id="json-depth-100000"),
])
def test_load_refuses_a_crafted_manifest_with_checkpoint_error(tmp_path, manifest, match):
    path = tmp_path / "crafted.npz"
    _with_manifest(path, manifest, w=np.ones(3))
    with pytest.raises(CheckpointError, match=match) as info:
        nn.load(path)
    assert "crafted.npz" in str(info.value)


def test_nesting_depth_is_bounded_on_save_and_load_alike(tmp_path):
    deep = np.ones(1)
    for _ in range(nn.io.MAX_DEPTH - 1):
        deep = [deep]
    nn.save({"x": deep}, tmp_path / "ok.npz")                 # the deepest allowed
    loaded = nn.load(tmp_path / "ok.npz")["x"]
    for _ in range(nn.io.MAX_DEPTH - 1):
        loaded = loaded[0]
    assert np.array_equal(loaded, np.ones(1))
    with pytest.raises(ValueError, match="deeper"):
        nn.save({"x": [deep]}, tmp_path / "deep.npz")
    assert sorted(os.listdir(tmp_path)) == ["ok.npz"]


def _npy_member(shape, descr="<f8", data=b""):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def test_load_refuses_a_header_larger_than_its_member_before_allocating(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.npy", _npy_member((2,), data=np.ones(2).tobytes()))
        # 8 TB declared, 16 bytes present: allocating it first would raise MemoryError
        archive.writestr("w.npy", _npy_member((10 ** 12,), data=b"\0" * 16))
    with pytest.raises(CheckpointError, match=r"bomb\.npz.*'w'.*\(1000000000000,\)"):
        nn.load(path)


def test_load_refuses_an_archive_beyond_the_size_cap(tmp_path, monkeypatch):
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, w=np.zeros(2 ** 21))            # 16 MB in a ~16 KB file
    assert os.path.getsize(path) < 2 ** 20
    with pytest.raises(CheckpointError, match=r"zeros\.npz.*16777216 bytes.*max_bytes"):
        nn.load(path, max_bytes=2 ** 20)
    assert nn.load(path, max_bytes=2 ** 25)["w"].shape == (2 ** 21,)
    monkeypatch.setattr(nn.io, "_memory_bytes", lambda: 2 ** 20)   # default: the RAM
    with pytest.raises(CheckpointError, match="memory"):
        nn.load(path)
    with pytest.raises(ValueError, match="max_bytes"):
        nn.load(path, max_bytes=-1)


def test_load_refuses_a_member_that_is_not_an_npy_array(tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", _npy_member((2,), data=np.ones(2).tobytes()))
        archive.writestr("readme.txt", b"hello")
    with pytest.raises(CheckpointError, match=r"mixed\.npz.*readme\.txt"):
        nn.load(path)


def test_write_json_makes_numpy_values_plain_and_non_finite_null(tmp_path):
    from nn.io import json_safe, read_json, write_json

    value = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "a": np.array([1.0, np.nan]),
             "b": [float("inf"), -np.inf, None, "x", True]}
    expected = {"1": [0.5, 3, True], "a": [1.0, None], "b": [None, None, None, "x", True]}
    assert json_safe(value) == expected
    assert type(json_safe(np.int64(3))) is int and type(json_safe(np.bool_(False))) is bool
    path = str(tmp_path / "doc.json")
    write_json(path, value)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == expected == read_json(path)
    write_json(path, [1, 2], indent=None)
    assert open(path, encoding="utf-8").read() == "[1, 2]\n"
    assert read_json(str(tmp_path / "missing.json")) is None
