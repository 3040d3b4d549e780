import numpy as np
import pytest

import nn
from segmentation.losses import segmentation_loss
from segmentation.unet import UNet
from tests.oracles import require
from tests.segmentation.checks import assert_input_gradient, assert_learns_a_threshold


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
    assert_input_gradient(model, (1, 4, 4, 1))


def test_tiny_training_run_loss_falls():
    assert_learns_a_threshold(UNet(1, 2, base_channels=4, depth=2), (4, 8, 8, 1), 30)


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


def _benchmark_module():
    """benchmarks/train_step_unet.py, whose torch twin of the U-Net the benchmark times."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "train_step_unet.py")
    spec = importlib.util.spec_from_file_location("train_step_unet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.oracle
def test_the_benchmarks_torch_unet_is_the_same_network():
    torch = require("torch")
    bench = _benchmark_module()
    ours = UNet(3, 5, base_channels=4, depth=3).astype(np.float64)
    theirs = bench.torch_unet(3, 5, 4, 3).double()
    # Our weights into torch: conv HWIO -> OIHW, transposed conv (kh, kw, Cin, Cout) ->
    # (Cin, Cout, kh, kw); DoubleConv's conv1, norm1, conv2, norm2 are Sequential 0, 1, 3, 4.
    state = {}
    for name, value in ours.state_dict().items():
        torch_name = name.replace("conv1", "0").replace("norm1", "1").replace("conv2", "3") \
            .replace("norm2", "4")
        if value.ndim == 4:
            value = value.transpose(2, 3, 0, 1) if name.startswith("upsample") \
                else value.transpose(3, 2, 0, 1)
        state[torch_name] = torch.from_numpy(np.ascontiguousarray(value))
    missing = theirs.load_state_dict(state, strict=False)
    assert not missing.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in missing.missing_keys)

    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 8, 12, 3))
    target = rng.integers(0, 5, (2, 8, 12))
    target[0, 0] = 255
    weights = np.array([1.0, 2.0, 2.0, 0.5, 1.0])
    gaps = rng.uniform(1, 10, target.shape)  # the per-pixel weights of the cross entropy
    x = nn.Tensor(images)
    logits = ours(x)
    loss = segmentation_loss(logits, target, dice_weight=0.5, class_weights=weights,
                             pixel_weights=gaps)
    loss.backward()
    t_logits = theirs(torch.from_numpy(images).permute(0, 3, 1, 2))
    t_target = torch.from_numpy(target)
    t_loss = bench.torch_segmentation_loss(t_logits, t_target, torch.from_numpy(weights),
                                           torch.from_numpy(gaps), 0.5)
    t_loss.backward()
    assert np.allclose(logits.data, t_logits.detach().permute(0, 2, 3, 1).numpy(), atol=1e-10)
    assert abs(loss.item() - t_loss.item()) < 1e-10
    first = theirs.encoder[0][0].weight.grad.numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO
    assert np.allclose(ours.encoder[0].conv1.weight.grad, first, atol=1e-10)
    up = theirs.upsample[0].weight.grad.numpy().transpose(2, 3, 0, 1)
    assert np.allclose(ours.upsample[0].weight.grad, up, atol=1e-10)
