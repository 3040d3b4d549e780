"""The library's own worker threads: split a kernel's work over a few cores.

Why this exists. A training step of a small CNN is dominated by its convolutions,
and a convolution here is im2col (a memory copy) plus a GEMM with a *narrow* right
operand (``C_out`` = 16-128 columns). Measured on the 2-core machine of this project
(OpenBLAS 0.3.31, ``(3072 x 144) @ (144 x 16)``, 16 calls): one BLAS thread 3.5 ms,
two BLAS threads 10 ms, and two BLAS threads while another process uses the second
core 130 ms (its workers spin and wait for each other). The copies, BatchNorm and
ReLU passes run on one core whatever BLAS does.

So detseg parallelizes its kernels itself, the way a data-parallel library does:
the work of one call (e.g. the output rows of a convolution) is cut into blocks
small enough to stay in cache, and ``n`` threads take blocks from a shared counter
(a thread that gets descheduled simply takes fewer blocks). NumPy releases the GIL
in its copies, ufunc loops and BLAS calls, so the threads run in parallel. BLAS
itself is pinned to one thread (at the first kernel call, whatever ``n`` is), which
makes ``n`` the total number of threads; a plain ``a @ b`` elsewhere in the process then
runs on one thread too.

Memory. A training step allocates and frees the same few hundred arrays (0.1-8 MB)
every step. glibc's malloc gives freed memory at the top of a heap back to the OS
(``M_TRIM_THRESHOLD``, 2x the largest mmap-ed block seen, by default) and serves large
blocks with fresh ``mmap`` calls, so every step faults the same pages in again (~15 000
page faults per U-Net step, ~20% of its time in this VM). At the first kernel call
the library asks glibc (``mallopt``) to serve blocks up to ``MALLOC_MMAP_THRESHOLD``
from its heaps and to keep up to ``MALLOC_TRIM_THRESHOLD`` bytes of freed memory for
reuse: the process keeps its peak memory instead of returning it to the OS between
steps (a caching allocator, as deep-learning frameworks have). Skipped when the
environment sets glibc's own variables (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``) or ``DETSEG_MALLOC_TUNING=0``.

The thread count comes from ``set_num_threads(n)``, else the environment variable
``DETSEG_NUM_THREADS``, else ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` (a process
started with one BLAS thread stays on one core), else ``min(2, os.cpu_count())``.
"""
import ctypes
import itertools
import os
import queue
import threading

__all__ = ["get_num_threads", "set_num_threads", "parallel_for", "parallel_rows", "parallel_sum",
           "split_range", "BLOCK_BYTES"]

# Memory-bound passes are cut into blocks of about this many bytes (the L2 cache of
# a core is 1 MB here): a block read twice in a row is read from cache the second time.
BLOCK_BYTES = 1 << 20

# Allocator settings (see the module docstring): blocks up to 32 MB (glibc's largest
# allowed mmap threshold on 64-bit) come from the heap, and up to 1 GB of freed memory
# is kept for reuse.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 1 << 30

_lock = threading.Lock()
_state = {"threads": None, "pool": None, "blas_pinned": None, "malloc_tuned": None}
_local = threading.local()  # .worker is True on the pool's threads (no nested pools)


def _after_fork_in_child():
    """A forked child (e.g. a data-loading worker) has none of the parent's threads."""
    global _lock
    _lock = threading.Lock()
    _state["pool"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------ BLAS control
def _blas_setters():
    """``set_num_threads`` functions of the OpenBLAS libraries loaded in this process.

    NumPy (and SciPy) wheels bundle their own OpenBLAS under a prefixed symbol name;
    the loaded shared objects are listed in ``/proc/self/maps`` (Linux). Returns an
    empty list where that is not available.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    names = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
             "openblas_set_num_threads64_", "openblas_set_num_threads")
    setters = []
    for path in sorted(p for p in paths if ".so" in os.path.basename(p)):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            function = getattr(lib, name, None)
            if function is not None:
                function.argtypes = [ctypes.c_int]
                function.restype = None
                setters.append(function)
                break
    return setters


def _blas_env_single():
    """True when the environment already asks BLAS for one thread."""
    return any(os.environ.get(name) == "1"
               for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))


def _pin_blas():
    """Pin BLAS to one thread; True when BLAS is known to run single-threaded."""
    if _state["blas_pinned"] is None:
        import numpy  # noqa: F401  (loads NumPy's BLAS before we look for it)

        setters = _blas_setters()
        for setter in setters:
            setter(1)
        _state["blas_pinned"] = bool(setters) or _blas_env_single()
    return _state["blas_pinned"]


# ------------------------------------------------------------- allocator control
def _tune_malloc():
    """Keep freed memory for reuse (glibc ``mallopt``); True when the settings were applied."""
    if _state["malloc_tuned"] is None:
        _state["malloc_tuned"] = False
        skip = (os.environ.get("DETSEG_MALLOC_TUNING") == "0"
                or any(name in os.environ for name in
                       ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")))
        if not skip:
            try:
                libc = ctypes.CDLL(None)
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
            ok = mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) == 1
            ok = mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD) == 1 and ok
            _state["malloc_tuned"] = ok
    return _state["malloc_tuned"]


# ----------------------------------------------------------------- thread count
def _default_threads():
    value = os.environ.get("DETSEG_NUM_THREADS")
    if not value:
        # A process started with BLAS/OpenMP thread variables keeps that total.
        counts = [os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")]
        counts = [int(count) for count in counts if count and count.isdigit() and int(count) > 0]
        if counts:
            return min(counts)
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"DETSEG_NUM_THREADS must be a positive int, got {value!r}") from None
        if threads < 1:
            raise ValueError(f"DETSEG_NUM_THREADS must be a positive int, got {value!r}")
        return threads
    return max(1, min(2, os.cpu_count() or 1))


def get_num_threads():
    """The number of threads detseg's kernels use (BLAS runs single-threaded inside them)."""
    if _state["threads"] is None:
        _state["threads"] = _default_threads()
    return _state["threads"]


def set_num_threads(n):
    """Use ``n`` threads in detseg's kernels (``n >= 1``); BLAS is pinned to one thread.

    Args:
        n (int): total number of threads of a kernel call, the caller's included.
    Raises:
        ValueError: ``n`` is not a positive int.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    with _lock:
        _state["threads"] = n
        if _state["pool"] is not None and _state["pool"].workers != n - 1:
            _state["pool"].close()
            _state["pool"] = None


class _Pool:
    """``workers`` daemon threads that run the jobs put on one queue.

    A job is ``(function, done, errors)``: the worker calls ``function()``, keeps an
    exception in ``errors`` and releases the lock ``done``. (Half the cost per call of
    ``concurrent.futures``, ~30 µs instead of ~65 µs here, which matters for the
    hundreds of short kernel calls of a training step.)
    """

    def __init__(self, workers):
        self.workers = workers
        self.jobs = queue.SimpleQueue()
        for k in range(workers):
            threading.Thread(target=self._work, name=f"detseg-{k + 1}", daemon=True).start()

    def _work(self):
        _local.worker = True
        while True:
            job = self.jobs.get()
            if job is None:
                return
            function, done, errors = job
            try:
                function()
            except BaseException as error:  # re-raised in the calling thread
                errors.append(error)
            finally:
                done.release()

    def close(self):
        for _ in range(self.workers):
            self.jobs.put(None)


def _pool():
    """The worker pool (``threads - 1`` workers; the calling thread is the last one), or None."""
    threads = get_num_threads()
    if _state["malloc_tuned"] is None:
        _tune_malloc()
    # BLAS is pinned to one thread even when the kernels use one thread: the blocks'
    # small GEMMs run 3x slower on a multi-threaded BLAS. Several threads calling a
    # multi-threaded BLAS at once stall: without control over BLAS the kernels run in
    # the caller only.
    if not _pin_blas() or threads == 1:
        return None
    with _lock:
        if _state["pool"] is None:
            _state["pool"] = _Pool(threads - 1)
        return _state["pool"]


# ------------------------------------------------------------------- scheduling
def parallel_for(function, count):
    """Call ``function(i, slot)`` for ``i`` in ``range(count)`` on the library's threads.

    Threads take indices from a shared counter in increasing order (dynamic
    scheduling: a thread that runs slower takes fewer items). ``slot`` in
    ``[0, threads)`` names the thread, for per-thread buffers and partial sums.
    Returns the number of slots used. Exceptions raised by ``function`` propagate.

    Args:
        function (callable): ``function(i, slot)``; its return value is ignored.
        count (int): number of items.
    Returns:
        int: the number of slots (threads) that may have been used.
    """
    # A call from inside a worker runs inline: waiting there for the pool could deadlock.
    pool = _pool() if count > 0 and not getattr(_local, "worker", False) else None
    if pool is None or count == 1:
        for i in range(count):
            function(i, 0)
        return 1
    slots = min(pool.workers + 1, count)
    counter = itertools.count()  # next() on it is atomic under the GIL

    def run(slot):
        for i in counter:
            if i >= count:
                return
            function(i, slot)

    errors, locks = [], []
    for slot in range(1, slots):
        done = threading.Lock()
        done.acquire()  # released by the worker when its share is done
        locks.append(done)
        pool.jobs.put((lambda slot=slot: run(slot), done, errors))
    try:
        run(0)
    finally:
        for done in locks:
            done.acquire()
    if errors:
        raise errors[0]
    return slots


def split_range(total, parts):
    """``[(start, stop), ...]``: ``range(total)`` cut into ``parts`` near-equal pieces."""
    parts = max(1, min(parts, total))
    bounds = [total * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def parallel_rows(function, rows, row_bytes, block_bytes=None):
    """Call ``function(start, stop, slot)`` over blocks of ``rows`` rows, ~``block_bytes`` each.

    Args:
        function (callable): ``function(start, stop, slot)`` for rows ``[start, stop)``.
        rows (int): number of rows.
        row_bytes (int): bytes per row (of the largest array the function touches).
        block_bytes (int or None): target bytes per block (default ``BLOCK_BYTES``).
    Returns:
        int: the number of slots (threads) that may have been used.
    """
    blocks = split_range(rows, max(1, rows * row_bytes // (block_bytes or BLOCK_BYTES)))
    return parallel_for(lambda i, slot: function(*blocks[i], slot), len(blocks))


def parallel_sum(function, rows, row_bytes):
    """``Σ function(start, stop)`` over ~1 MB blocks of rows, the blocks on the threads.

    The blocks' arrays are added in block order at the end, so the sum does not depend
    on which thread took which block (bit-for-bit reproducible results).

    Args:
        function (callable): ``function(start, stop)`` -> ndarray (same shape for all blocks).
        rows (int): number of rows.
        row_bytes (int): bytes per row.
    Returns:
        ndarray: the sum.
    """
    values = {}

    def run(start, stop, slot):
        values[start] = function(start, stop)

    parallel_rows(run, rows, row_bytes)
    ordered = [values[start] for start in sorted(values)]
    total = ordered[0].copy()
    for value in ordered[1:]:
        total += value
    return total
