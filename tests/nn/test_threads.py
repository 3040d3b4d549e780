"""Tests of nn._threads (the library's worker threads) and of the kernels cut into blocks.

The blocked kernels (conv2d's im2col + GEMM per block of output rows, the parallel
GEMMs) are run with tiny blocks, so that every way of cutting (several images per
block, several blocks per image, one row per block) is exercised, and compared with
the loop reference of tests/nn/test_conv.py and with a single block.
"""
import threading

import numpy as np
import pytest

import nn
from nn import _threads
from nn.functional import conv_kernels
from nn.functional.conv import conv2d_backward, conv2d_forward
from tests.nn.test_conv import conv2d_reference


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = nn.get_num_threads()
    nn.set_num_threads(request.param)
    yield request.param
    nn.set_num_threads(before)


# ================================================================== scheduling
def test_parallel_for_runs_every_index_once(threads):
    seen = []
    lock = threading.Lock()

    def record(i, slot):
        assert 0 <= slot < threads
        with lock:
            seen.append(i)

    slots = _threads.parallel_for(record, 37)
    assert sorted(seen) == list(range(37))
    assert 1 <= slots <= threads


def test_parallel_for_empty_and_single(threads):
    calls = []
    assert _threads.parallel_for(lambda i, slot: calls.append(i), 0) == 1
    assert calls == []
    _threads.parallel_for(lambda i, slot: calls.append((i, slot)), 1)
    assert calls == [(0, 0)]


def test_parallel_for_nested_call_runs_inline(threads):
    """A kernel called from inside a worker must not wait for the (busy) pool."""
    totals = np.zeros(6)

    def outer(i, slot):
        def inner(j, inner_slot):
            assert inner_slot == 0 or not getattr(_threads._local, "worker", False)
            totals[i] += j

        _threads.parallel_for(inner, 5)

    _threads.parallel_for(outer, 6)
    np.testing.assert_array_equal(totals, np.full(6, 10.0))


def test_parallel_for_propagates_exceptions(threads):
    def fail(i, slot):
        if i == 3:
            raise RuntimeError("item 3")

    with pytest.raises(RuntimeError, match="item 3"):
        _threads.parallel_for(fail, 8)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="positive int"):
        nn.set_num_threads(bad)


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("DETSEG_NUM_THREADS", "3")
    assert _threads._default_threads() == 3
    monkeypatch.setenv("DETSEG_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="DETSEG_NUM_THREADS"):
        _threads._default_threads()
    monkeypatch.delenv("DETSEG_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert _threads._default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    assert _threads._default_threads() in (1, 2)


@pytest.mark.parametrize("total,parts", [(10, 3), (3, 10), (0, 4), (7, 1), (8, 8)])
def test_split_range_covers_the_range(total, parts):
    pieces = _threads.split_range(total, parts)
    covered = [i for start, stop in pieces for i in range(start, stop)]
    assert covered == list(range(total))
    assert all(stop > start for start, stop in pieces) or total == 0
    assert len(pieces) <= max(1, parts)


# ======================================================== blocked conv kernels
CASES = [
    # (x shape, weight shape, stride, padding, dilation)
    ((3, 7, 9, 4), (3, 3, 4, 5), 1, 1, 1),
    ((2, 8, 8, 3), (3, 3, 3, 6), 2, 1, 1),
    ((2, 9, 7, 2), (3, 2, 2, 3), (2, 1), ((1, 0), (2, 1)), (1, 2)),
    ((4, 5, 6, 3), (1, 1, 3, 4), 1, 0, 1),  # a plain GEMM
    ((2, 6, 6, 4), (1, 1, 4, 3), 2, 0, 1),  # 1x1 stride 2: im2col
]


@pytest.mark.parametrize("keep_cols_bytes", [0, 1 << 30], ids=["rebuilt-cols", "kept-cols"])
@pytest.mark.parametrize("block_bytes", [64, 700, 1 << 20])
@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation", CASES)
def test_blocked_conv_matches_the_loop_reference(monkeypatch, threads, block_bytes, x_shape,
                                                  w_shape, stride, padding, dilation,
                                                  keep_cols_bytes):
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(_threads, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(conv_kernels, "KEEP_COLS_BYTES", keep_cols_bytes)
    rng = np.random.default_rng(sum(x_shape) + block_bytes)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(w_shape)
    bias = rng.standard_normal(w_shape[-1])
    y, cache = conv2d_forward(x, weight, bias, stride, padding, dilation)
    geometry = cache.geometry
    if not conv_kernels._is_plain_gemm(geometry):
        # The column matrix is kept (dW reads it) or the input is (dW rebuilds it).
        assert (cache.cols is not None) == (keep_cols_bytes > 0)
        assert (cache.x_kept is not None) == (keep_cols_bytes == 0)
    expected = conv2d_reference(x, weight, bias, geometry.stride, geometry.padding,
                                geometry.dilation)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)

    # Gradients against the loop reference's: <y, dy> differentiated by finite sums.
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", 1 << 30)  # one block, one thread's GEMM
    dx_one, dw_one, db_one = conv2d_backward(dy, conv2d_forward(x, weight, bias, stride, padding,
                                                                dilation)[1])
    np.testing.assert_allclose(dx, dx_one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, db_one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 1, 2)), rtol=1e-12, atol=1e-12)
    # dW by its definition:
    # dW[i, j, c, o] = Σ x_pad[n, ho·s + i·d, wo·s + j·d, c] dy[n, ho, wo, o].
    (pt, pb), (pl, pr) = geometry.padding
    x_pad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    (sh, sw), (dh, dw_), (ho, wo) = geometry.stride, geometry.dilation, geometry.out_hw
    dw_ref = np.empty(w_shape)
    for i in range(w_shape[0]):
        for j in range(w_shape[1]):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw_, j * dw_ + sw * (wo - 1) + 1, sw)
            taps = x_pad[:, rows, cols]  # (N, Ho, Wo, C)
            dw_ref[i, j] = np.einsum("nhwc,nhwo->co", taps, dy)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rows,block_bytes", [(1, 64), (50, 64), (50, 400), (0, 64)])
def test_parallel_gemms(monkeypatch, threads, rows, block_bytes):
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((rows, 7))
    b = rng.standard_normal((7, 5))
    c = rng.standard_normal((rows, 5))
    np.testing.assert_allclose(conv_kernels._gemm_rows(a, b), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv_kernels._gemm_tn(a, c), a.T @ c, rtol=1e-12, atol=1e-12)
    assert conv_kernels._gemm_tn(a, c).shape == (7, 5)


def test_blocked_conv_float32_and_empty_batch(threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((0, 5, 5, 3)).astype(np.float32)
    weight = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    y, cache = conv2d_forward(x, weight, None, 1, 1)
    assert y.shape == (0, 5, 5, 4) and y.dtype == np.float32
    dx, dw, _ = conv2d_backward(np.zeros(y.shape, np.float32), cache, need_bias_grad=False)
    assert dx.shape == x.shape and dw.shape == weight.shape
    np.testing.assert_array_equal(dw, 0)


# ============================================== blocked elementwise and pooling passes
@pytest.mark.parametrize("block_bytes", [64, 1 << 30])
def test_blocked_passes_match_plain_numpy(monkeypatch, threads, block_bytes):
    """BatchNorm, ReLU, softmax, log-softmax and max pooling cut into tiny blocks."""
    from nn.functional.activation import (
        log_softmax_forward, relu_backward, relu_forward, softmax_forward,
    )
    from nn.functional.normalization import batch_norm_backward, batch_norm_forward
    from nn.functional.pooling import _geometry, max_pool2d_backward, max_pool2d_forward

    monkeypatch.setattr(_threads, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(block_bytes)
    x = rng.standard_normal((3, 5, 6, 4))
    grad = rng.standard_normal(x.shape)

    y, mask = relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(relu_backward(grad, mask), grad * (x > 0))

    e = np.exp(x - x.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(softmax_forward(x), probs, rtol=1e-13)
    logp, p = log_softmax_forward(x, return_probs=True)
    np.testing.assert_allclose(logp, np.log(probs), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(p, probs, rtol=1e-13)

    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    running_mean, running_var = np.zeros(4), np.ones(4)
    out, cache = batch_norm_forward(x, weight, bias, running_mean, running_var, True, 0.1, 1e-5)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    xhat = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(out, xhat * weight + bias, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(running_mean, 0.1 * mean, rtol=1e-12)
    dx, dweight, dbias = batch_norm_backward(grad, cache)
    m = x.size // 4
    np.testing.assert_allclose(dbias, grad.sum(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(dweight, (grad * xhat).sum(axis=(0, 1, 2)), rtol=1e-12)
    expected_dx = weight / np.sqrt(var + 1e-5) * (grad - dbias / m - xhat * dweight / m)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-10, atol=1e-12)
    out_eval, _ = batch_norm_forward(x, weight, bias, running_mean, running_var, False, 0.1, 1e-5)
    expected_eval = (x - running_mean) / np.sqrt(running_var + 1e-5) * weight + bias
    np.testing.assert_allclose(out_eval, expected_eval, rtol=1e-12, atol=1e-12)

    # Max pooling, overlapping padded windows with ties (the first maximum wins).
    ties = np.round(x * 2) / 2
    geometry = _geometry(ties, 3, 2, 1, 1, False)
    pooled, pool_cache = max_pool2d_forward(ties, geometry)
    xp = np.pad(ties, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ho, wo = pooled.shape[1:3]
    expected = np.full(pooled.shape, -np.inf)
    expected_dx = np.zeros(xp.shape)
    pooled_grad = rng.standard_normal(pooled.shape)
    for n in range(x.shape[0]):
        for a in range(ho):
            for b in range(wo):
                for c in range(x.shape[-1]):
                    window = xp[n, 2 * a:2 * a + 3, 2 * b:2 * b + 3, c]
                    expected[n, a, b, c] = window.max()
                    i, j = np.unravel_index(np.argmax(window), window.shape)
                    expected_dx[n, 2 * a + i, 2 * b + j, c] += pooled_grad[n, a, b, c]
    np.testing.assert_array_equal(pooled, expected)
    np.testing.assert_allclose(max_pool2d_backward(pooled_grad, pool_cache),
                               expected_dx[:, 1:-1, 1:-1], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kernel,stride,padding,output_padding", [
    (2, 2, 0, 0), (2, 2, 0, 1), (3, 2, 1, 1), (1, 1, 0, 0),
])
def test_blocked_conv_transpose_matches_the_loop_reference(monkeypatch, threads, kernel, stride,
                                                           padding, output_padding):
    from nn.functional.conv import conv_transpose2d_backward, conv_transpose2d_forward
    from tests.nn.test_conv import conv_transpose2d_reference

    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", 64)
    rng = np.random.default_rng(kernel + stride)
    x = rng.standard_normal((3, 4, 5, 3))
    weight = rng.standard_normal((kernel, kernel, 3, 2))
    y, cache = conv_transpose2d_forward(x, weight, None, stride, padding, output_padding)
    expected = conv_transpose2d_reference(x, weight, None, (stride, stride), (padding, padding),
                                          (output_padding, output_padding))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = conv_transpose2d_backward(dy, cache, need_bias_grad=False)
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", 1 << 30)
    dx_one, dw_one, _ = conv_transpose2d_backward(dy, cache, need_bias_grad=False)
    np.testing.assert_allclose(dx, dx_one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_one, rtol=1e-12, atol=1e-12)
    # Adjointness fixes dx: <conv_transpose(x), dy> = <x, dx>.
    np.testing.assert_allclose(np.sum(y * dy), np.sum(x * dx), rtol=1e-10)


@pytest.mark.parametrize("block_bytes", [64, 1 << 30])
def test_blocked_softmax_backward_passes(monkeypatch, threads, block_bytes):
    from nn.functional.activation import log_softmax_backward, softmax_backward, softmax_forward

    monkeypatch.setattr(_threads, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 3, 6))
    grad = rng.standard_normal(x.shape)
    for axis in (-1, 1):
        y = softmax_forward(x, axis)
        expected = y * (grad - (grad * y).sum(axis=axis, keepdims=True))
        np.testing.assert_allclose(softmax_backward(grad, y, axis), expected, rtol=1e-12,
                                   atol=1e-14)
        expected = grad - y * grad.sum(axis=axis, keepdims=True)
        np.testing.assert_allclose(log_softmax_backward(grad, y, axis), expected, rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_pool():
    """The parent's worker threads do not exist in a forked child: it must not wait for them."""
    import os

    before = nn.get_num_threads()
    nn.set_num_threads(2)
    try:
        _threads.parallel_for(lambda i, slot: None, 4)  # the parent's pool exists now
        pid = os.fork()
        if pid == 0:  # the child: a kernel call must finish
            done = []
            _threads.parallel_for(lambda i, slot: done.append(i), 6)
            os._exit(0 if sorted(done) == list(range(6)) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        nn.set_num_threads(before)


def _malloc_state_in_child(env):
    """``_threads._state["malloc_tuned"]`` after a kernel call in a fresh process."""
    import os
    import subprocess
    import sys

    code = ("from nn import _threads; _threads.parallel_for(lambda i, s: None, 2); "
            "print(_threads._state['malloc_tuned'])")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES",
                          "DETSEG_MALLOC_TUNING")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(clean, **env), cwd=root, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_tuning_at_the_first_kernel_call_and_its_opt_outs():
    """glibc keeps freed memory for reuse unless the user set the allocator up or opted out."""
    assert _malloc_state_in_child({}) == "True"
    assert _malloc_state_in_child({"DETSEG_MALLOC_TUNING": "0"}) == "False"
    assert _malloc_state_in_child({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "False"


@pytest.mark.parametrize("block_bytes", [64, 1 << 30])
def test_blocked_sigmoid_passes(monkeypatch, threads, block_bytes):
    from nn.functional.activation import log_sigmoid_forward, sigmoid_forward

    monkeypatch.setattr(_threads, "BLOCK_BYTES", block_bytes)
    x = np.linspace(-40, 40, 3 * 7 * 5).reshape(3, 7, 5)
    np.testing.assert_allclose(sigmoid_forward(x), 1 / (1 + np.exp(-x)), rtol=1e-13)
    np.testing.assert_allclose(log_sigmoid_forward(x), -np.log1p(np.exp(-x)), rtol=1e-12,
                               atol=1e-300)
    assert sigmoid_forward(x.astype(np.float32)).dtype == np.float32
