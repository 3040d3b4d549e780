"""Optimizers (SGD, Adam, AdamW), learning-rate schedules and gradient clipping,
with PyTorch's names and update rules."""
from nn.optim.optimizer import Optimizer
from nn.optim.sgd import SGD
from nn.optim.adam import Adam, AdamW
from nn.optim.lr_scheduler import (LRScheduler, StepLR, MultiStepLR, CosineAnnealingLR, LinearLR,
                                   LinearWarmup, WarmupCosine)
from nn.optim.clip_grad import clip_grad_norm_, clip_grad_value_
from nn.optim import lr_scheduler  # noqa: F401  (torch.optim.lr_scheduler's spelling)
