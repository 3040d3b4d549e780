import numpy as np
import pytest

import nn
from segmentation.unet import UNet


@pytest.mark.parametrize("depth, norm", [(2, "batch"), (3, "group"), (3, None)])
def test_same_padding_shapes_and_every_parameter_gets_a_gradient(depth, norm):
    model = UNet(3, 5, base_channels=4, depth=depth, norm=norm)
    x = nn.Tensor(np.random.default_rng(0).standard_normal((2, 8, 12, 3)).astype(np.float32))
    out = model(x)
    assert out.shape == (2, 8, 12, 5)
    assert out.dtype == np.float32
    out.sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.shape == param.shape, name
        assert np.all(np.isfinite(param.grad)), name
    assert any(np.abs(p.grad).sum() > 0 for p in model.parameters())


def test_valid_padding_copy_and_crop_matches_output_size():
    model = UNet(1, 2, base_channels=2, depth=3, padding="valid")
    h, w = 60, 76
    out = model(nn.Tensor(np.zeros((1, h, w, 1), np.float32)))
    assert out.shape[1:3] == model.output_size(h, w)
    assert out.shape[1:3] == (20, 36)


def test_gradient_of_a_small_unet_in_float64():
    model = UNet(1, 2, base_channels=2, depth=2, norm=None).astype(np.float64)
    x = nn.Tensor(np.random.default_rng(1).standard_normal((1, 4, 4, 1)), requires_grad=True)
    assert nn.gradcheck(lambda t: model(t), [x], atol=1e-6)


def test_tiny_training_run_loss_falls():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 8, 8, 1)).astype(np.float32)
    targets = (images[..., 0] > 0.3).astype(np.int64)  # learnable: threshold the pixel
    model = UNet(1, 2, base_channels=4, depth=2)
    opt = nn.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(nn.Tensor(images)), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_channels=0, num_classes=2), "in_channels"),
        (dict(in_channels=3, num_classes=2, depth=1), "depth"),
        (dict(in_channels=3, num_classes=2, padding="full"), "padding"),
        (dict(in_channels=3, num_classes=2, norm="layer"), "norm"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(**kwargs)


def test_bad_input_shapes():
    model = UNet(3, 2, base_channels=2, depth=3)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(nn.Tensor(np.zeros((1, 6, 8, 3), np.float32)))
    with pytest.raises(ValueError, match="expects input"):
        model(nn.Tensor(np.zeros((1, 8, 8, 1), np.float32)))
