"""Checks every segmentation network's tests make: its input gradient against finite
differences, and that it learns a trivial task in a few steps."""
import numpy as np

import nn


def assert_input_gradient(model, shape):
    """``model``'s gradient with respect to a random float64 input of ``shape`` (N, H, W, C)
    equals finite differences."""
    x = nn.Tensor(np.random.default_rng(1).standard_normal(shape), requires_grad=True)
    assert nn.gradcheck(lambda t: model(t), [x], atol=1e-6)


def assert_learns_a_threshold(model, shape, steps):
    """``steps`` Adam steps (lr 0.01) of cross entropy on random images of ``shape``
    (N, H, W, 1), the target class being pixel > 0.3, halve the loss."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal(shape).astype(np.float32)
    targets = (images[..., 0] > 0.3).astype(np.int64)  # learnable: threshold the pixel
    opt = nn.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(nn.Tensor(images)), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
