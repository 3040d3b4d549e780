"""detseg.nn: a hand-written autograd, layers, losses and optimizers on NumPy.

Layout is channels-last: images and feature maps are ``(N, H, W, C)``.
"""
from nn.tensor import Tensor, Function, no_grad, enable_grad, is_grad_enabled, concat, stack, where
from nn.random import manual_seed, default_generator
from nn.gradient_check import gradcheck, GradcheckError
from nn.modules import *  # noqa: F401,F403  (Module, Parameter, layers)
from nn import functional  # noqa: F401
from nn import init  # noqa: F401
from nn import optim  # noqa: F401
from nn.io import save, load
from nn import data  # noqa: F401
from nn._threads import get_num_threads, set_num_threads
