"""Segmentation losses against loops written from the formulas, gradients, bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nn
from segmentation.losses import pixel_cross_entropy, segmentation_loss, soft_dice_loss


def _reference_ce(logits, target, ignore_index=255, weights=None, pixel_weights=None):
    """Loop over pixels: Σ v · w[t] · -log softmax(x)[t] / Σ v · w[t]."""
    n, h, w, k = logits.shape
    weights = np.ones(k) if weights is None else weights
    pixel_weights = np.ones(target.shape) if pixel_weights is None else pixel_weights
    total = norm = 0.0
    for b in range(n):
        for i in range(h):
            for j in range(w):
                t = target[b, i, j]
                if t == ignore_index:
                    continue
                row = logits[b, i, j].astype(np.float64)
                log_z = np.log(np.sum(np.exp(row - row.max()))) + row.max()
                v = pixel_weights[b, i, j]
                total += v * weights[t] * (log_z - row[t])
                norm += v * weights[t]
    return total / norm if norm else 0.0


def _reference_dice(logits, target, ignore_index=255, eps=1.0):
    """Loop over images and classes: mean of 1 - (2 Σ p·y + ε) / (Σ p + Σ y + ε)."""
    n, h, w, k = logits.shape
    losses = []
    for b in range(n):
        x = logits[b].astype(np.float64)
        p = np.exp(x - x.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        valid = target[b] != ignore_index
        for c in range(k):
            y = (target[b] == c) & valid
            inter = np.sum(p[..., c][valid] * y[valid])
            card = np.sum(p[..., c][valid]) + np.sum(y)
            losses.append(1 - (2 * inter + eps) / (card + eps))
    return float(np.mean(losses))


def _example(seed, shape=(2, 3, 5, 4), ignored=3):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape) * 2
    target = rng.integers(0, shape[-1], shape[:3])
    flat = target.reshape(-1)
    flat[rng.choice(flat.size, ignored, replace=False)] = 255
    return logits, target


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_match_the_formulas(seed, dtype):
    logits, target = _example(seed)
    weights = np.array([0.5, 1.0, 2.0, 1.5])
    x = nn.Tensor(logits.astype(dtype))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    ce = pixel_cross_entropy(x, target, class_weights=weights)
    assert ce.dtype == dtype
    assert abs(ce.item() - _reference_ce(logits, target, weights=weights)) < tol * 10
    dice = soft_dice_loss(x, target)
    assert abs(dice.item() - _reference_dice(logits, target)) < tol * 10
    total, parts = segmentation_loss(x, target, dice_weight=0.7, class_weights=weights,
                                     return_parts=True)
    expected = (_reference_ce(logits, target, weights=weights)
                + 0.7 * _reference_dice(logits, target))
    assert total.dtype == dtype
    assert abs(total.item() - expected) < tol * 10
    assert abs(parts["ce"] - ce.item()) < tol and abs(parts["dice"] - dice.item()) < tol


@given(seed=st.integers(0, 2 ** 16), k=st.integers(2, 5), dice_weight=st.floats(0, 3))
def test_sum_of_the_two_terms(seed, k, dice_weight):
    logits, target = _example(seed, shape=(2, 2, 3, k), ignored=2)
    x = nn.Tensor(logits)
    total = segmentation_loss(x, target, dice_weight=dice_weight).item()
    ce = pixel_cross_entropy(x, target).item()
    dice = soft_dice_loss(x, target).item()
    assert abs(total - (ce + dice_weight * dice)) < 1e-12


def test_dice_weight_zero_is_cross_entropy_and_perfect_prediction_has_zero_dice():
    logits, target = _example(3)
    x = nn.Tensor(logits)
    plain = pixel_cross_entropy(x, target).item()
    assert segmentation_loss(x, target, dice_weight=0).item() == plain
    # Confident, correct logits: Dice loss -> 0 (up to the smoothing and the softmax tails).
    target = np.random.default_rng(0).integers(0, 4, (1, 4, 4))
    perfect = 50.0 * np.eye(4)[target]
    assert soft_dice_loss(nn.Tensor(perfect), target).item() < 1e-6


def test_gradient_float64():
    logits, target = _example(4, shape=(2, 2, 3, 3), ignored=2)
    x = nn.Tensor(logits, requires_grad=True)
    weights = np.array([1.0, 0.5, 2.0])
    assert nn.gradcheck(
        lambda t: segmentation_loss(t, target, dice_weight=0.8, class_weights=weights), [x])
    assert nn.gradcheck(lambda t: soft_dice_loss(t, target, eps=0.5), [x])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_weights_match_the_formula_and_ones_change_nothing(seed):
    logits, target = _example(seed)
    weights = np.array([0.5, 1.0, 2.0, 1.5])
    pixel_weights = np.random.default_rng(seed + 10).uniform(0, 5, target.shape)
    x = nn.Tensor(logits)
    loss, parts = segmentation_loss(x, target, dice_weight=0.7, class_weights=weights,
                                    pixel_weights=pixel_weights, return_parts=True)
    expected_ce = _reference_ce(logits, target, weights=weights, pixel_weights=pixel_weights)
    assert parts["ce"] == pytest.approx(expected_ce, rel=1e-10)
    assert loss.item() == pytest.approx(expected_ce + 0.7 * _reference_dice(logits, target),
                                        rel=1e-10)
    ones = segmentation_loss(x, target, class_weights=weights, pixel_weights=np.ones(target.shape))
    plain = segmentation_loss(x, target, class_weights=weights)
    assert ones.item() == pytest.approx(plain.item(), rel=1e-12)
    # Scaling every pixel weight by the same factor changes nothing either.
    scaled = segmentation_loss(x, target, class_weights=weights, pixel_weights=3 * pixel_weights)
    heavy = segmentation_loss(x, target, class_weights=weights, pixel_weights=pixel_weights)
    assert scaled.item() == pytest.approx(heavy.item(), rel=1e-12)


def test_pixel_weights_gradient_float64_and_all_zero_weights():
    logits, target = _example(7, shape=(2, 2, 3, 3), ignored=2)
    pixel_weights = np.random.default_rng(8).uniform(0.5, 4, target.shape)
    x = nn.Tensor(logits, requires_grad=True)
    assert nn.gradcheck(lambda t: segmentation_loss(t, target, dice_weight=0.5,
                                                    pixel_weights=pixel_weights), [x])
    fresh = nn.Tensor(logits, requires_grad=True)
    zero = segmentation_loss(fresh, target, dice_weight=0, pixel_weights=np.zeros(target.shape))
    zero.backward()
    assert zero.item() == 0.0 and np.all(fresh.grad == 0)


def test_every_pixel_ignored_gives_zero_cross_entropy_and_zero_gradient():
    logits = np.random.default_rng(5).standard_normal((1, 2, 2, 3))
    target = np.full((1, 2, 2), 255)
    x = nn.Tensor(logits, requires_grad=True)
    loss = pixel_cross_entropy(x, target)
    loss.backward()
    assert loss.item() == 0.0
    assert np.all(x.grad == 0)
    # Dice of an image without valid pixels: every class absent, dice 1, loss 0.
    assert soft_dice_loss(nn.Tensor(logits), target).item() == 0.0


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(target=np.zeros((1, 2, 3), np.int64)), ValueError, "target must have shape"),
    (dict(target=np.zeros((1, 2, 2), np.float32)), TypeError, "integer"),
    (dict(dice_weight=-1.0), ValueError, "dice_weight"),
    (dict(dice_weight=float("nan")), ValueError, "dice_weight"),
    (dict(class_weights=np.ones(2)), ValueError, "class_weights"),
    (dict(class_weights=-np.ones(3)), ValueError, "class_weights"),
    (dict(logits=nn.Tensor(np.zeros((2, 2, 3)))), ValueError, "logits"),
    (dict(pixel_weights=np.ones((1, 2, 3))), ValueError, "pixel_weights"),
    (dict(pixel_weights=-np.ones((1, 2, 2))), ValueError, "pixel_weights"),
    (dict(pixel_weights=np.full((1, 2, 2), np.inf)), ValueError, "pixel_weights"),
])
def test_bad_input(kwargs, error, message):
    args = dict(logits=nn.Tensor(np.zeros((1, 2, 2, 3))), target=np.zeros((1, 2, 2), np.int64))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        segmentation_loss(**args)


def _composed_loss(x, target, dice_weight, weights=None, pixel_weights=None, eps=1.0):
    """The two terms as separate autograd ops (what the fused Function replaces)."""
    from segmentation.losses import _weighted_cross_entropy

    if pixel_weights is None:
        ce = pixel_cross_entropy(x, target, class_weights=weights)
    else:
        w = None if weights is None else np.asarray(weights, x.dtype)
        ce = _weighted_cross_entropy(x, target, w, 255, pixel_weights.astype(x.dtype))
    return ce + soft_dice_loss(x, target, eps=eps) * x.dtype.type(dice_weight)


@given(seed=st.integers(0, 2 ** 16), k=st.integers(2, 6), dice_weight=st.floats(0.01, 3),
       weighted=st.booleans(), tiny_blocks=st.booleans())
def test_fused_loss_matches_the_composed_terms(seed, k, dice_weight, weighted, tiny_blocks):
    """One softmax for both terms: the values and gradients of the separate ops, also
    when an image is cut into several blocks (their sums added in order)."""
    import segmentation.losses as losses

    logits, target = _example(seed, shape=(3, 4, 5, k), ignored=4)
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.2, 3, k) if weighted else None
    pixel_weights = rng.uniform(0, 4, target.shape) if weighted else None
    fused_x, plain_x = nn.Tensor(logits, requires_grad=True), nn.Tensor(logits, requires_grad=True)
    saved = losses.BLOCK_BYTES
    losses.BLOCK_BYTES = 3 * k * 8 if tiny_blocks else saved  # 3 pixels a block
    try:
        fused = segmentation_loss(fused_x, target, dice_weight=dice_weight, class_weights=weights,
                                  pixel_weights=pixel_weights)
        fused.backward()
    finally:
        losses.BLOCK_BYTES = saved
    plain = _composed_loss(plain_x, target, dice_weight, weights, pixel_weights)
    plain.backward()
    assert abs(fused.item() - plain.item()) < 1e-12
    assert np.abs(fused_x.grad - plain_x.grad).max() < 1e-14


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_loss_dtype_parts_and_training_batch_shape(dtype):
    """The training batch's shape (8 x 48 x 144, 14 classes): float32 stays float32 and
    agrees with the composed ops; ``return_parts`` gives the two terms."""
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal((8, 48, 144, 14))).astype(dtype)
    target = rng.integers(0, 14, (8, 48, 144))
    target[:, :2] = 255
    weights = np.where(np.arange(14) >= 3, 2.0, 1.0)
    gaps = rng.uniform(1, 10, target.shape)
    x, y = nn.Tensor(logits, requires_grad=True), nn.Tensor(logits, requires_grad=True)
    loss, parts = segmentation_loss(x, target, class_weights=weights, pixel_weights=gaps,
                                    return_parts=True)
    loss.backward()
    plain = _composed_loss(y, target, 1.0, weights, gaps)
    plain.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert abs(loss.item() - plain.item()) < tol * abs(plain.item())
    assert abs(parts["ce"] + parts["dice"] - loss.item()) < tol * 10
    assert np.abs(x.grad - y.grad).max() < tol * np.abs(y.grad).max()


def test_fused_loss_bad_input_and_ignored_images():
    logits, target = _example(1)
    x = nn.Tensor(logits, requires_grad=True)
    bad = target.copy()
    bad[0, 0, 0] = 7  # K = 4
    with pytest.raises(ValueError, match="target values"):
        segmentation_loss(x, bad)
    for eps in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            segmentation_loss(x, target, eps=eps)
    # An image with every pixel ignored: no gradient reaches it from either term.
    target[1] = 255
    loss = segmentation_loss(x, target, dice_weight=2.0)
    loss.backward()
    assert np.all(x.grad[1] == 0) and np.any(x.grad[0] != 0)
    assert nn.gradcheck(lambda t: segmentation_loss(t, target, dice_weight=2.0, eps=0.5),
                        [nn.Tensor(logits, requires_grad=True)])
