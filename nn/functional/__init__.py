"""Differentiable functions on Tensors (or ndarrays); each returns a Tensor.

Numeric kernels (plain ndarray functions) live next to their autograd Function in
the submodule of their topic.
"""
