import numpy as np
import pytest

import nn
from segmentation.fcn import FCN8s, SmallClassifier, bilinear_kernel, convolutionize


def test_convolutionized_classifier_equals_classifier_on_its_input_size():
    nn.manual_seed(3)
    clf = SmallClassifier(3, 4, input_size=16, width=4, hidden=8)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
    logits = clf(nn.Tensor(x)).data
    dense = convolutionize(clf)
    score_map = dense(nn.Tensor(x)).data
    assert score_map.shape == (2, 1, 1, 4)
    np.testing.assert_allclose(score_map[:, 0, 0], logits, rtol=1e-5, atol=1e-5)


def test_convolutionized_classifier_slides_over_a_larger_image():
    clf = SmallClassifier(3, 4, input_size=16, width=4, hidden=8)
    dense = convolutionize(clf)
    big = np.random.default_rng(1).standard_normal((1, 32, 48, 3)).astype(np.float32)
    score_map = dense(nn.Tensor(big)).data
    assert score_map.shape == (1, 3, 5, 4)  # (32/8 - 2 + 1, 48/8 - 2 + 1)
    # Score-map cell (1, 2) is the dense layers applied to the 2x2 window of the feature
    # map at (1, 2): the window a 16x16 crop at pixel (8, 16) maps to. (Classifying the
    # crop itself differs near its border: the crop's convolutions see zero padding where
    # the big image has real neighbours.)
    features = clf.features(nn.Tensor(big))
    window = features[:, 1:3, 2:4, :].reshape(1, -1)
    dense_logits = clf.fc2(nn.functional.relu(clf.fc1(window))).data
    np.testing.assert_allclose(score_map[0, 1, 2], dense_logits[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="convolutionize"):
        clf(nn.Tensor(big))


def test_bilinear_kernel_upsamples_a_constant_to_a_constant():
    w = bilinear_kernel(4, 2)
    x = np.ones((1, 5, 5, 2), np.float32)
    y = nn.functional.conv_transpose2d(x, w, stride=2, padding=1).data
    assert y.shape == (1, 10, 10, 2)
    np.testing.assert_allclose(y[0, 1:-1, 1:-1], 1.0, rtol=1e-6)  # interior exactly 1


def test_fcn8s_shapes_and_gradients():
    model = FCN8s(3, 3, width=2)
    out = model(nn.Tensor(np.zeros((1, 32, 64, 3), np.float32)))
    assert out.shape == (1, 32, 64, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="divisible by 32"):
        model(nn.Tensor(np.zeros((1, 20, 32, 3), np.float32)))
