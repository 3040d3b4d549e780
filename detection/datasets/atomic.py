"""Atomic file writes: a reader never sees a half-written file.

Every file detseg writes goes first to a temporary file in the *same* directory
and is then renamed over its final name with ``os.replace``. A rename inside one
file system is atomic (POSIX ``rename(2)``), so after an interruption (Ctrl-C, a
crash, a full disk) the final path holds either the old complete file or the new
complete file, never a prefix. The temporary file is removed on failure.

We do not ``fsync``: this protects against an interrupted *process*, which is what
happens on a laptop; surviving a power cut would cost one disk flush per file and
make dataset generation several times slower.
"""
import os
import secrets

__all__ = ["atomic_write_bytes", "atomic_write_text"]


def _temp_path(path):
    """A fresh hidden name next to ``path`` (same directory → same file system)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temp file in the same dir + ``os.replace``).

    Args:
        path (str | os.PathLike): destination file; its directory must exist.
        data (bytes): the complete file content.

    Raises:
        TypeError: ``data`` is not bytes-like.
        FileNotFoundError: the destination directory does not exist.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    while True:
        temp = _temp_path(path)
        try:
            # O_EXCL: never clobber another writer's temp file; mode 0o666 lets the umask
            # decide the permissions, as for a file opened with open(path, "wb").
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    """Write the string ``text`` to ``path`` atomically (see ``atomic_write_bytes``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode(encoding))
