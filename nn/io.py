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

Atomicity: ``save`` (and every file detseg writes, through ``atomic_write``) writes a
temporary file next to the target, named after it, and ``os.replace``\\ s it onto the
path, so an interrupted process never leaves a half-written file.
"""
import json
import numbers
import os
import secrets
import zipfile

import numpy as np

from nn.tensor import Tensor

__all__ = ["save", "load", "CheckpointError", "atomic_write", "atomic_write_bytes", "atomic_write_text"]

SEPARATOR = "/"
MANIFEST_KEY = "__structure__"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (corrupt, truncated, pickled, mismatched)."""


# ------------------------------------------------------------ atomic writes
# Every file detseg writes goes first to a temporary file next to its target, named
# after it (``ckpt.npz.tmp-<pid>-<token>``), and is then renamed over the final name
# with ``os.replace``. A rename inside one file system is atomic (POSIX ``rename(2)``):
# after an interruption the path holds the old complete file or the new one, never a
# prefix. A temporary left by a killed process names its target and its writer's pid;
# the next write of the same target removes it once that process is gone.
_TEMP_MARK = ".tmp-"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _remove_stale_temporaries(path):
    """Delete ``path.tmp-<pid>-*`` files whose writing process no longer runs."""
    directory, name = os.path.split(path)
    prefix = name + _TEMP_MARK
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        pid_text = entry[len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass


def _open_temporary(path):
    """Create a fresh temporary next to ``path``; returns ``(fd, temp_path)``."""
    while True:
        temp = f"{path}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            # O_EXCL: never clobber another writer's file; mode 0o666 lets the umask decide
            # the permissions, as for a file opened with open(path, "wb").
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def atomic_write(path, write):
    """Write a file atomically: ``write(handle)`` fills a temporary, then it is renamed.

    Args:
        path (str | os.PathLike): destination file; its directory must exist.
        write (callable): called with a binary file handle open for writing.

    Raises:
        FileNotFoundError: the destination directory does not exist.
        IsADirectoryError: ``path`` is a directory.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory")
    _remove_stale_temporaries(path)
    fd, temp = _open_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically (see ``atomic_write``).

    Raises:
        TypeError: ``data`` is not bytes-like.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path, text, encoding="utf-8"):
    """Write the string ``text`` to ``path`` atomically (see ``atomic_write``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode(encoding))


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
    atomic_write(path, lambda handle: writer(handle, **arrays))


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
