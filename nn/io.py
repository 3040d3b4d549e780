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
pickle-bearing file is refused with a clear error instead of executing code. A file
is read as a zip archive only after its signature says it is one; each member's
``.npy`` header is read before its data, and an array larger than its member holds,
or a total beyond ``max_bytes`` (default: the machine's memory), is refused before
anything is allocated. The manifest is checked entry by entry and its nesting is
bounded (``MAX_DEPTH``, the same bound ``save`` applies): a crafted file gives a
``CheckpointError`` naming it, never another exception from deep inside.

Atomicity: ``save`` (and every file detseg writes, through ``atomic_write``) writes a
temporary file next to the target, named after it, and ``os.replace``\\ s it onto the
path, so an interrupted process never leaves a half-written file.
"""
import json
import math
import numbers
import os
import re
import secrets
import zipfile
import zlib

import numpy as np

from nn.tensor import Tensor

__all__ = ["save", "load", "CheckpointError", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "json_safe", "write_json", "read_json"]

SEPARATOR = "/"
MANIFEST_KEY = "__structure__"
FORMAT_VERSION = 1
MAX_DEPTH = 64  # nesting levels of the saved object (a training state uses about 5)


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


def json_safe(value, keep_non_finite=False):
    """``value`` as plain JSON data, recursively: dict keys as strings, tuples and arrays
    as lists, NumPy scalars as Python numbers, NaN and infinities as None (JSON has
    neither) unless ``keep_non_finite``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v, keep_non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v, keep_non_finite) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if keep_non_finite or math.isfinite(value) else None
    return value


def write_json(path, value, indent=1):
    """Write ``json_safe(value)`` to ``path`` atomically, with a final newline.

    Args:
        indent (int or None): JSON indentation (None: one line).
    """
    atomic_write_text(path, json.dumps(json_safe(value), indent=indent) + "\n")


def read_json(path):
    """The JSON document at ``path``, or None when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ------------------------------------------------------------------ flatten
def _join(prefix, key):
    return key if not prefix else prefix + SEPARATOR + key


def _encode(obj, prefix, arrays, depth=0):
    """Return the JSON spec of ``obj``; store its arrays in ``arrays`` under path names."""
    if depth > MAX_DEPTH:
        raise ValueError(f"cannot save {prefix!r}: the object is nested deeper than "
                         f"{MAX_DEPTH} levels, which nn.load would refuse")
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
            items.append([str(key), kind,
                          _encode(value, _join(prefix, str(key)), arrays, depth + 1)])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        specs = [_encode(v, _join(prefix, str(i)), arrays, depth + 1) for i, v in enumerate(obj)]
        return {"t": "tuple" if isinstance(obj, tuple) else "list", "items": specs}
    raise TypeError(f"cannot save a {type(obj).__name__} at {prefix!r}: use arrays, numbers, "
                    f"strings, None, lists, tuples and dicts")


_INT_KEY = re.compile(r"-?[0-9]+")
_SCALAR_TYPES = {"bool": (bool,), "int": (int,), "str": (str,)}


def _decode(spec, arrays, path, where="root", depth=0):
    """Rebuild the object described by ``spec``, checking every entry (CheckpointError)."""
    def bad(what):
        return CheckpointError(f"{path!r} has a corrupt checkpoint manifest: {what} at {where}")

    if depth > MAX_DEPTH:
        raise bad(f"the structure is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, dict) or not isinstance(spec.get("t"), str):
        raise bad(f"an entry must be an object with a type 't', got {spec!r:.60}")
    kind = spec["t"]
    if kind in ("array", "npscalar"):
        key = spec.get("k")
        if not isinstance(key, str):
            raise bad(f"an array entry needs a str key 'k', got {key!r:.60}")
        if key not in arrays:
            raise bad(f"array {key!r} is missing from the archive")
        if kind == "array":
            return arrays[key]
        if arrays[key].shape != ():
            raise bad(f"scalar entry {key!r} holds an array of shape {arrays[key].shape}")
        return arrays[key][()]
    if kind == "none":
        return None
    if kind in _SCALAR_TYPES:
        value = spec.get("v")
        if not isinstance(value, _SCALAR_TYPES[kind]) or (kind == "int" and isinstance(value, bool)):
            raise bad(f"a {kind} entry holds {value!r:.60}")
        return value
    if kind == "float":
        value = spec.get("v")
        try:
            return float(value) if isinstance(value, str) else float("invalid")
        except ValueError:
            raise bad(f"a float entry holds {value!r:.60}") from None
    if kind not in ("dict", "list", "tuple"):
        raise bad(f"unknown entry type {kind!r:.60}")
    items = spec.get("items")
    if not isinstance(items, list):
        raise bad(f"a {kind} entry needs a list of 'items', got {items!r:.60}")
    if kind != "dict":
        values = [_decode(child, arrays, path, f"{where}/{i}", depth + 1)
                  for i, child in enumerate(items)]
        return tuple(values) if kind == "tuple" else values
    out = {}
    for item in items:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
            raise bad(f"dict items must be [key, key kind, entry] lists, got {item!r:.60}")
        key, key_kind, child = item
        if key_kind == "int":
            if not _INT_KEY.fullmatch(key):
                raise bad(f"an int key holds {key!r:.60}")
            key = int(key)
        elif key_kind != "str":
            raise bad(f"unknown key kind {key_kind!r:.60} of key {key!r:.60}")
        out[key] = _decode(child, arrays, path, f"{where}/{key}", depth + 1)
    return out


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
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")   # a member first, or an empty archive
_NPY_SIGNATURE = b"\x93NUMPY"


def _memory_bytes():
    """Physical memory of this machine in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_signature(path):
    """Refuse, with a message saying what the file is, anything that is not a zip archive."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise CheckpointError(f"{path!r} is empty, not an .npz archive")
    if head.startswith(_NPY_SIGNATURE):
        raise CheckpointError(f"{path!r} holds a single .npy array, not an .npz checkpoint")
    if head.startswith(_ZIP_SIGNATURES):
        return
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocols 2..5 start with PROTO
        raise CheckpointError(
            f"{path!r} contains pickled data, which nn.load refuses (allow_pickle=False); "
            f"re-save it with nn.save")
    raise CheckpointError(f"{path!r} is not an .npz archive (no zip signature; it starts "
                          f"with {head!r})")


def _npy_header(member, path, key):
    """``(shape, dtype, header size)`` of an ``.npy`` member, reading only its header."""
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise CheckpointError(f"{path!r}: array {key!r} has a corrupt .npy header: {exc}") from None
    return shape, dtype, member.tell()


def _read_arrays(archive, path, limit, limit_name):
    """Every array of the archive, each header checked against its member before reading."""
    members, total = [], 0
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or not name.endswith(".npy"):
            raise CheckpointError(f"{path!r}: member {name!r} is not an .npy array")
        key = name[:-len(".npy")]
        if any(key == other for other, _ in members):
            raise CheckpointError(f"{path!r}: array {key!r} appears twice in the archive")
        with archive.open(info) as member:
            shape, dtype, header_size = _npy_header(member, path, key)
        if dtype.hasobject:
            raise CheckpointError(f"{path!r}: entry {key!r} contains object (pickled) data, "
                                  f"which nn.load refuses (allow_pickle=False)")
        declared = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        held = info.file_size - header_size
        if declared != held:
            raise CheckpointError(
                f"{path!r}: array {key!r} declares shape {shape} of {dtype} ({declared} bytes) "
                f"but its member holds {held} bytes (truncated or crafted)")
        total += declared
        if limit is not None and total > limit:
            raise CheckpointError(
                f"{path!r}: its arrays hold at least {total} bytes (up to {key!r}, shape "
                f"{shape} of {dtype}), more than {limit_name} ({limit} bytes)")
        members.append((key, info))
    arrays = {}
    for key, info in members:
        with archive.open(info) as member:
            arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def load(path, max_bytes=None):
    """Read a checkpoint written by ``save`` (or any pickle-free ``.npz``).

    Args:
        path (str or PathLike): the file.
        max_bytes (int, optional): refuse an archive whose arrays hold more bytes than
            this, before reading them. None: the machine's physical memory.
    Returns:
        dict: the saved object, rebuilt (arrays as ndarrays). A ``.npz`` without the
        manifest gives a flat ``{key: ndarray}``.
    Raises:
        FileNotFoundError: no such file (naming it).
        ValueError: ``max_bytes`` is not an int >= 0.
        CheckpointError (a ValueError): not an ``.npz`` archive, truncated or corrupt, an
            array larger than its member or than ``max_bytes``, pickled objects, or a
            malformed manifest — naming the file.
    """
    path = os.fspath(path)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(
            max_bytes, numbers.Integral) or max_bytes < 0):
        raise ValueError(f"max_bytes must be None or an int >= 0, got {max_bytes!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not an .npz file")
    if max_bytes is None:
        limit, limit_name = _memory_bytes(), "this machine's memory (pass max_bytes=)"
    else:
        limit, limit_name = int(max_bytes), "max_bytes"
    _check_signature(path)
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = _read_arrays(archive, path, limit, limit_name)
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        raise CheckpointError(f"{path!r} is not a readable .npz checkpoint "
                              f"(truncated or corrupt?): {exc}") from exc
    if MANIFEST_KEY not in arrays:
        return arrays
    raw = arrays.pop(MANIFEST_KEY)
    if raw.shape != () or raw.dtype.kind != "U":
        raise CheckpointError(f"{path!r} has a corrupt checkpoint manifest: {MANIFEST_KEY!r} "
                              f"must be a string, got {raw.dtype} of shape {raw.shape}")
    try:
        manifest = json.loads(str(raw[()]))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path!r} has a corrupt checkpoint manifest: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{path!r} has a corrupt checkpoint manifest: its JSON is "
                              f"nested deeper than the parser allows") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path!r} has a corrupt checkpoint manifest: expected a JSON "
                              f"object, got {type(manifest).__name__}")
    if manifest.get("format") != "detseg-checkpoint":
        raise CheckpointError(f"{path!r}: unrecognized checkpoint manifest")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path!r} has a corrupt checkpoint manifest: version must be "
                              f"an int, got {version!r:.60}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path!r} was written by a newer format version "
                              f"{version} (this reader knows {FORMAT_VERSION})")
    if "root" not in manifest:
        raise CheckpointError(f"{path!r} has a corrupt checkpoint manifest: no root entry")
    return _decode(manifest["root"], arrays, path)
