"""Layers as Modules: thin holders of hyperparameters and weights around nn.functional."""
from nn.modules.module import Module, Parameter, IncompatibleKeys
from nn.modules.linear import Linear, Identity
from nn.modules.activation import ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, LogSoftmax
from nn.modules.container import Sequential, ModuleList
from nn.modules.dropout import Dropout
from nn.modules.pooling import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
from nn.modules.conv import Conv2d, ConvTranspose2d
from nn.modules.roi import RoIPool, RoIAlign
from nn.modules.normalization import BatchNorm2d, GroupNorm
from nn.modules.upsampling import Upsample
