"""Differentiable functions on Tensors (or ndarrays); each returns a Tensor.

Numeric kernels (plain ndarray functions) live next to their autograd Function in
the submodule of their topic.
"""
from nn.functional.activation import relu, leaky_relu, sigmoid, tanh, softmax, log_softmax, dropout
from nn.functional.linear import linear
