"""Layers as Modules: thin holders of hyperparameters and weights around nn.functional."""
from nn.modules.module import Module, Parameter, IncompatibleKeys
