"""Differentiable functions on Tensors (or ndarrays); each returns a Tensor.

Numeric kernels (plain ndarray functions) live next to their autograd Function in
the submodule of their topic.
"""
from nn.functional.activation import relu, leaky_relu, sigmoid, tanh, softmax, log_softmax, dropout
from nn.functional.dense import linear
from nn.functional.loss import (cross_entropy, binary_cross_entropy_with_logits, sigmoid_focal_loss,
                                smooth_l1_loss, l1_loss, mse_loss, dice_loss)
from nn.functional.pooling import max_pool2d, avg_pool2d, adaptive_avg_pool2d
from nn.functional.conv import conv2d, conv_transpose2d
from nn.functional.normalization import batch_norm, group_norm
from nn.functional.roi import roi_pool, roi_align
from nn.functional.upsampling import interpolate
