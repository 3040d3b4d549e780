import numpy as np
import pytest

import nn
from detection.backbones import resnet18
from segmentation.resnet_unet import ResNetUNet, resnet18_widths
from segmentation.unet import UNet
from tests.segmentation.checks import assert_input_gradient, assert_learns_a_threshold


def _count(module):
    return int(sum(p.data.size for p in module.parameters()))


# ------------------------------------------------------------ parameters by hand
def _conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def _bn(c):
    return 2 * c  # weight and bias (the running statistics are buffers)


def _basic_block(cin, cout, stride):
    count = _conv(3, cin, cout) + _bn(cout) + _conv(3, cout, cout) + _bn(cout)
    if stride != 1 or cin != cout:
        count += _conv(1, cin, cout) + _bn(cout)  # projection shortcut
    return count


def _double_conv(cin, cout):
    return _conv(3, cin, cout) + _bn(cout) + _conv(3, cout, cout) + _bn(cout)


def _hand_count(widths, cin, k):
    w0, w1, w2, w3 = widths
    stem = _conv(3, cin, w0) + _bn(w0)
    encoder = sum(_basic_block(a, b, s) + _basic_block(b, b, 1)
                  for a, b, s in ((w0, w0, 1), (w0, w1, 2), (w1, w2, 2), (w2, w3, 2)))
    decoder = sum(_conv(2, hi, lo, bias=True) + _double_conv(2 * lo, lo)
                  for hi, lo in ((w3, w2), (w2, w1), (w1, w0)))
    return stem + encoder + decoder + _conv(1, w0, k, bias=True)


def test_parameter_count_of_width_quarter_written_out():
    # widths 16, 32, 64, 128; 3 input channels, 12 classes:
    # stem 9·3·16 + 32 = 464; stage 1: 2 · (2·9·16·16 + 2·32) = 9344;
    # stage 2: (9·16·32 + 9·32·32 + 16·32 + 3·64) + (2·9·32·32 + 2·64) = 14528 + 18560;
    # stage 3: 57728 + 73984; stage 4: 230144 + 295424;
    # decoder: (4·128·64 + 64) + (9·128·64 + 9·64·64 + 256) = 32832 + 110848,
    #          (4·64·32 + 32) + (9·64·32 + 9·32·32 + 128) = 8224 + 27776,
    #          (4·32·16 + 16) + (9·32·16 + 9·16·16 + 64) = 2064 + 6976; head 16·12 + 12 = 204.
    model = ResNetUNet(3, 12, width_multiplier=0.25)
    assert model.widths == (16, 32, 64, 128)
    assert _count(model) == 889_100
    assert _hand_count(model.widths, 3, 12) == 889_100


@pytest.mark.parametrize("multiplier, cin, k", [(1.0, 3, 12), (0.5, 1, 2), (0.1, 3, 5)])
def test_parameter_count_matches_the_hand_formula(multiplier, cin, k):
    model = ResNetUNet(cin, k, width_multiplier=multiplier)
    assert model.widths == resnet18_widths(multiplier)
    assert _count(model) == _hand_count(model.widths, cin, k)


def test_encoder_stages_are_resnet18s():
    """The four stages have exactly the parameters of ResNet-18's layer1..layer4 (same
    blocks, same widths); only the stem differs (3x3/1, no max-pool, instead of 7x7/2)."""
    model = ResNetUNet(3, 4, width_multiplier=0.5)
    reference = resnet18(0.5)
    for stage, layer in zip(model.encoder, (reference.layer1, reference.layer2, reference.layer3,
                                            reference.layer4)):
        assert _count(stage) == _count(layer)
        assert [p.shape for p in stage.parameters()] == [p.shape for p in layer.parameters()]
    assert model.stem[0].weight.shape == (3, 3, 3, 32)
    assert reference.stem[0].weight.shape == (7, 7, 3, 32)


def test_widths_rule_and_bad_multiplier():
    assert resnet18_widths(1.0) == (64, 128, 256, 512)
    assert resnet18_widths(0.05) == (8, 8, 13, 26)  # at least 8 channels
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="width_multiplier"):
            ResNetUNet(3, 2, width_multiplier=bad)
    with pytest.raises(ValueError, match="num_classes"):
        ResNetUNet(3, 0)
    with pytest.raises(ValueError, match="in_channels"):
        ResNetUNet(0, 2)


# ----------------------------------------------------------------------- shapes
@pytest.mark.parametrize("height, width", [(40, 120), (8, 8), (16, 48), (32, 96), (64, 40)])
def test_output_has_the_input_size(height, width):
    model = ResNetUNet(3, 12, width_multiplier=0.125)
    x = np.random.default_rng(0).standard_normal((2, height, width, 3)).astype(np.float32)
    out = model(nn.Tensor(x))
    assert out.shape == (2, height, width, 12)
    assert out.dtype == np.float32


def test_stages_work_at_strides_1_2_4_8_on_a_plate_crop():
    model = ResNetUNet(3, 12, width_multiplier=0.125).eval()
    x = nn.Tensor(np.zeros((1, 40, 120, 3), np.float32))
    with nn.no_grad():
        x = model.stem(x)
        assert x.shape == (1, 40, 120, 8)
        shapes = []
        for stage in model.encoder:
            x = stage(x)
            shapes.append(x.shape)
    assert shapes == [(1, 40, 120, 8), (1, 20, 60, 16), (1, 10, 30, 32), (1, 5, 15, 64)]


def test_bad_inputs():
    model = ResNetUNet(3, 2, width_multiplier=0.125)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(nn.Tensor(np.zeros((1, 36, 120, 3), np.float32)))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(nn.Tensor(np.zeros((1, 40, 20, 3), np.float32)))
    with pytest.raises(ValueError, match="expects input"):
        model(nn.Tensor(np.zeros((1, 40, 120, 1), np.float32)))
    with pytest.raises(ValueError, match="expects input"):
        model(nn.Tensor(np.zeros((40, 120, 3), np.float32)))


# -------------------------------------------------------------------- gradients
def test_every_parameter_gets_a_nonzero_gradient():
    model = ResNetUNet(3, 5, width_multiplier=0.125)
    rng = np.random.default_rng(0)
    x = nn.Tensor(rng.standard_normal((2, 16, 24, 3)).astype(np.float32))
    out = model(x)
    # A random weighting of the logits: a plain sum would give the layers before a
    # BatchNorm a zero gradient (the normalization removes a constant shift).
    (out * nn.Tensor(rng.standard_normal(out.shape).astype(np.float32))).sum().backward()
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(list(model.parameters())) > 0
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.shape == param.shape, name
        assert np.all(np.isfinite(param.grad)), name
        assert np.abs(param.grad).max() > 0, name


def test_input_gradient_in_float64():
    model = ResNetUNet(1, 2, width_multiplier=0.125).astype(np.float64).eval()
    assert_input_gradient(model, (1, 8, 8, 1))


def test_tiny_training_run_loss_falls():
    nn.manual_seed(0)
    assert_learns_a_threshold(ResNetUNet(1, 2, width_multiplier=0.125), (4, 8, 16, 1), 25)


def test_same_decoder_as_the_unet():
    """The decoder levels are the U-Net's (transposed conv + DoubleConv) at the same widths:
    a U-Net of base 16 and depth 4 has the same decoder parameters as ResNetUNet x0.25."""
    unet = UNet(3, 12, base_channels=16, depth=4)
    model = ResNetUNet(3, 12, width_multiplier=0.25)
    for mine, theirs in ((model.upsample, unet.upsample), (model.decoder, unet.decoder),
                         (model.head, unet.head)):
        assert [p.shape for p in mine.parameters()] == [p.shape for p in theirs.parameters()]
