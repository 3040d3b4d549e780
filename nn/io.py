"""Checkpoints: ``nn.save`` writes ``.npz`` files atomically, ``nn.load`` reads them
without pickle.

Format
------
An ordinary NumPy ``.npz`` archive (readable with ``np.load``):

- A flat ``state_dict`` (``{"conv1.weight": array, ...}``) is stored under its own keys.
- Nested state is flattened with the separator ``"/"``: ``{"model": model.state_dict(),
  "optimizer": opt.state_dict(), "epoch": 3}`` stores arrays such as
  ``"model/conv1.weight"`` and ``"optimizer/state/0/exp_avg"``. Dict keys must be
  strings without ``"/"`` or ints.
- Everything that is not an array (ints, floats, bools, strings, None, lists, tuples,
  dict layout, int keys) is described by a JSON manifest stored as the string array
  ``"__structure__"``; ``nn.load`` uses it to rebuild the same Python object, so
  ``nn.load(path)`` equals what was saved (Tensors come back as ndarrays).

Safety: files are loaded with ``allow_pickle=False``, so an object array or a
pickle-bearing file is refused with a clear error instead of executing code.

Atomicity: ``save`` writes a temporary file in the target directory, fsyncs it and
``os.replace``\\ s it onto the path, so a crash never leaves a half-written checkpoint.
"""
import json
import numbers
import os
import tempfile
import zipfile

import numpy as np

from nn.tensor import Tensor

__all__ = ["save", "load", "CheckpointError"]

SEPARATOR = "/"
MANIFEST_KEY = "__structure__"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (corrupt, truncated, pickled, mismatched)."""


# ------------------------------------------------------------------ flatten
def _join(prefix, key):
    return key if not prefix else prefix + SEPARATOR + key


def _encode(obj, prefix, arrays):
    """Return the JSON spec of ``obj``; store its arrays in ``arrays`` under path names."""
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"cannot save {prefix or 'the value'!r}: object arrays need pickle")
        name = prefix or "array"
        if name == MANIFEST_KEY or name in arrays:
            raise ValueError(f"duplicate or reserved checkpoint key {name!r}")
        arrays[name] = obj
        return {"t": "array", "k": name}
    if isinstance(obj, np.generic):
        name = prefix or "scalar"
        arrays[name] = np.asarray(obj)
        return {"t": "npscalar", "k": name}
    if obj is None:
        return {"t": "none"}
    if isinstance(obj, bool):
        return {"t": "bool", "v": obj}
    if isinstance(obj, numbers.Integral):
        return {"t": "int", "v": int(obj)}
    if isinstance(obj, float):
        return {"t": "float", "v": repr(obj)}  # repr round-trips exactly, also inf/nan
    if isinstance(obj, str):
        return {"t": "str", "v": obj}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(f"checkpoint keys must be str or int, got {key!r} under {prefix!r}")
            if isinstance(key, str) and (SEPARATOR in key or key == ""):
                raise ValueError(f"checkpoint key {key!r} must be non-empty and must not contain "
                                 f"{SEPARATOR!r}")
            kind = "str" if isinstance(key, str) else "int"
            items.append([str(key), kind, _encode(value, _join(prefix, str(key)), arrays)])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        specs = [_encode(v, _join(prefix, str(i)), arrays) for i, v in enumerate(obj)]
        return {"t": "tuple" if isinstance(obj, tuple) else "list", "items": specs}
    raise TypeError(f"cannot save a {type(obj).__name__} at {prefix!r}: use arrays, numbers, "
                    f"strings, None, lists, tuples and dicts")


def _decode(spec, arrays, path):
    kind = spec["t"]
    if kind == "array":
        return arrays[spec["k"]]
    if kind == "npscalar":
        return arrays[spec["k"]][()]
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        return spec["v"]
    if kind == "float":
        return float(spec["v"])
    if kind == "dict":
        return {(int(k) if key_kind == "int" else k): _decode(child, arrays, path)
                for k, key_kind, child in spec["items"]}
    if kind in ("list", "tuple"):
        values = [_decode(child, arrays, path) for child in spec["items"]]
        return tuple(values) if kind == "tuple" else values
    raise CheckpointError(f"{path}: unknown entry type {kind!r} in the checkpoint structure")


# --------------------------------------------------------------------- save
def save(obj, path, compress=False):
    """Write ``obj`` (a state_dict or nested state) to ``path`` as ``.npz``, atomically.

    Args:
        obj (dict): ``{name: ndarray}`` or nested dicts/lists of arrays, Tensors, numbers,
            strings and None (see the module docstring).
        path (str or PathLike): destination; written exactly there (no suffix added).
        compress (bool): zip-deflate the arrays (smaller, slower).
    Raises:
        TypeError / ValueError: an unsupported value or key, before anything is written.
        FileNotFoundError: the directory does not exist.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"save expects a dict (a state_dict or nested state), got {type(obj).__name__}")
    path = os.fspath(path)
    arrays = {}
    spec = _encode(obj, "", arrays)
    manifest = json.dumps({"format": "detseg-checkpoint", "version": FORMAT_VERSION, "root": spec})
    arrays[MANIFEST_KEY] = np.array(manifest)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    writer = np.savez_compressed if compress else np.savez
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            writer(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --------------------------------------------------------------------- load
def load(path):
    """Read a checkpoint written by ``save`` (or any pickle-free ``.npz``).

    Args:
        path (str or PathLike): the file.
    Returns:
        dict: the saved object, rebuilt (arrays as ndarrays). A ``.npz`` without the
        manifest gives a flat ``{key: ndarray}``.
    Raises:
        FileNotFoundError: no such file (naming it).
        CheckpointError (a ValueError): not an ``.npz``, truncated or corrupt, or it
            contains pickled objects — naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not an .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CheckpointError(
                f"{path!r} contains pickled data, which nn.load refuses (allow_pickle=False); "
                f"re-save it with nn.save") from exc
        raise CheckpointError(f"{path!r} is not a readable .npz checkpoint: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path!r} is not a readable .npz checkpoint "
                              f"(truncated or corrupt?): {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} holds a single .npy array, not an .npz checkpoint")
    arrays = {}
    try:
        with archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise CheckpointError(
                f"{path!r}: entry contains object (pickled) data, which nn.load refuses "
                f"(allow_pickle=False)") from exc
        raise CheckpointError(f"{path!r} is corrupt: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"{path!r} is truncated or corrupt: {exc}") from exc
    if MANIFEST_KEY not in arrays:
        return arrays
    try:
        manifest = json.loads(str(arrays.pop(MANIFEST_KEY)[()]))
        if manifest.get("format") != "detseg-checkpoint":
            raise CheckpointError(f"{path!r}: unrecognized checkpoint manifest")
        if manifest.get("version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path!r} was written by a newer format version "
                                  f"{manifest['version']} (this reader knows {FORMAT_VERSION})")
        return _decode(manifest["root"], arrays, path)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path!r} has a corrupt checkpoint manifest: {exc}") from exc
