"""Learning-rate schedules, stepped once per epoch (or per iteration) after ``optimizer.step()``.

Each scheduler computes the rate of every parameter group in **closed form** from
the group's base rate (``group["initial_lr"]``, recorded at construction) and the
step counter ``last_epoch``, so a resumed run (``load_state_dict``) reproduces the
schedule exactly. Construction applies the rate of step 0, as in PyTorch::

    sched = CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        train_one_epoch(...)      # calls opt.step()
        sched.step()
"""
import math
import numbers

from nn.optim.optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "CosineAnnealingLR", "LinearLR", "LinearWarmup",
           "WarmupCosine"]


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_float(name, value, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


class LRScheduler:
    """Base class: subclasses define ``lr_at(epoch) -> list of float`` (one per group).

    Args:
        optimizer (Optimizer): whose groups' "lr" is set.
        last_epoch (int): -1 starts a new schedule; otherwise resume at that step
            (the groups must then already have "initial_lr").
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an nn.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in g for g in optimizer.param_groups):
            raise KeyError("resuming a schedule (last_epoch != -1) needs 'initial_lr' in every group")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        """Advance one step and write the new rates into the optimizer."""
        self.last_epoch += 1
        lrs = self.lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        """The rates set by the latest ``step`` (one per group)."""
        return list(self._last_lr)

    def state_dict(self):
        """``{"last_epoch": int, "base_lrs": [float]}`` (the hyperparameters live in the code)."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict):
        """Resume: restore the step counter and base rates and re-apply the current rate."""
        last_epoch = int(state_dict["last_epoch"])
        base_lrs = [float(v) for v in state_dict["base_lrs"]]
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"scheduler state has {len(base_lrs)} base rates, the optimizer "
                             f"has {len(self.optimizer.param_groups)} groups")
        self.base_lrs = base_lrs
        self.last_epoch = last_epoch - 1
        self.step()


class StepLR(LRScheduler):
    """``lr = base · gamma^⌊epoch / step_size⌋`` (PyTorch's StepLR)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = _check_float("gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * self.gamma ** (epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """``lr = base · gamma^(number of milestones <= epoch)`` (PyTorch's MultiStepLR)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = sorted(_check_int("milestone", m, 0) for m in milestones)
        self.gamma = _check_float("gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        passed = sum(1 for m in self.milestones if m <= epoch)
        return [base * self.gamma ** passed for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing (Loshchilov & Hutter, 2017, "SGDR"), without restarts::

        lr = eta_min + (base - eta_min) · (1 + cos(π · epoch / T_max)) / 2
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _check_int("T_max", T_max, 1)
        self.eta_min = _check_float("eta_min", eta_min, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the rate linearly from ``start_factor`` to ``end_factor`` over ``total_iters``
    steps, then hold it (PyTorch's LinearLR)::

        lr = base · (start + (end - start) · min(epoch, total_iters) / total_iters)
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        self.start_factor = _check_float("start_factor", start_factor, 0.0, 1.0)
        if self.start_factor == 0:
            raise ValueError("start_factor must be > 0")
        self.end_factor = _check_float("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _check_int("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        fraction = min(epoch, self.total_iters) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * fraction
        return [base * factor for base in self.base_lrs]


class LinearWarmup(LRScheduler):
    """Linear warm-up (Goyal et al., 2017, "Accurate, Large Minibatch SGD") followed by
    another schedule.

    For ``epoch < warmup_iters``: ``lr = base · (s + (1 - s) · epoch / warmup_iters)``
    with ``s = start_factor``; afterwards the ``after`` scheduler's rate at
    ``epoch - warmup_iters`` (or the base rate when ``after`` is None). This equals
    PyTorch's ``SequentialLR([LinearLR(s, 1, warmup_iters), after], [warmup_iters])``.

    Args:
        optimizer (Optimizer): the optimizer (the same one ``after`` was built on).
        warmup_iters (int): length of the warm-up, in steps.
        start_factor (float): fraction of the base rate at step 0, in (0, 1].
        after (LRScheduler, optional): the schedule that follows; it is driven by
            this wrapper (do not call its ``step`` yourself).
    """

    def __init__(self, optimizer, warmup_iters, start_factor=1e-3, after=None, last_epoch=-1):
        self.warmup_iters = _check_int("warmup_iters", warmup_iters, 0)
        self.start_factor = _check_float("start_factor", start_factor, 0.0, 1.0)
        if self.start_factor == 0:
            raise ValueError("start_factor must be > 0")
        if after is not None:
            if not isinstance(after, LRScheduler):
                raise TypeError(f"after must be an LRScheduler, got {type(after).__name__}")
            if after.optimizer is not optimizer:
                raise ValueError("after must schedule the same optimizer")
        self.after = after
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        if epoch < self.warmup_iters:
            factor = self.start_factor + (1 - self.start_factor) * epoch / self.warmup_iters
            return [base * factor for base in self.base_lrs]
        if self.after is None:
            return list(self.base_lrs)
        return self.after.lr_at(epoch - self.warmup_iters)


class WarmupCosine(LRScheduler):
    """Linear warm-up, then a cosine decay to a floor: the schedule of detseg's trainers.

    The rate of step ``t`` (the ``t``-th ``optimizer.step()``, counted from 0), with
    ``W = warmup_steps``, ``T = max(total_steps - W, 1)``, ``s = start_factor`` and
    ``f = final_factor``::

        t <  W:  lr = base · (s + (1 - s) · t / W)
        t >= W:  lr = base · (f + (1 - f) · (1 + cos(π · min(t - W, T) / T)) / 2)

    The warm-up climbs from ``s · base`` (Goyal et al., 2017, "Accurate, Large Minibatch
    SGD"); the cosine falls from ``base`` at step ``W`` to ``f · base`` at step
    ``total_steps`` and stays there (Loshchilov & Hutter, 2017, "SGDR", without restarts).
    Equal, for ``t <= total_steps``, to ``LinearWarmup(W, s, after=CosineAnnealingLR(T,
    eta_min=f · base))``.

    A run fitted to a time budget does not know its length when it starts: with
    ``total_steps=None`` the rate holds at ``base`` after the warm-up, and ``stretch``
    sets (or later changes) the total once the speed of a step has been measured.
    The rates of the warm-up do not depend on the total.

    Args:
        optimizer (Optimizer): whose groups' "lr" is set.
        warmup_steps (int): ``W >= 0``.
        total_steps (int or None): steps of the whole run (``>= 1``), or None (not known yet).
        final_factor (float): ``f`` in [0, 1], the floor relative to the base rate.
        start_factor (float): ``s`` in (0, 1], the first step's rate relative to the base rate.
    """

    def __init__(self, optimizer, warmup_steps, total_steps=None, final_factor=0.02,
                 start_factor=0.05, last_epoch=-1):
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        self.total_steps = (None if total_steps is None
                            else _check_int("total_steps", total_steps, 1))
        self.final_factor = _check_float("final_factor", final_factor, 0.0, 1.0)
        self.start_factor = _check_float("start_factor", start_factor, 0.0, 1.0)
        if self.start_factor == 0:
            raise ValueError("start_factor must be > 0")
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        """The rate of ``step`` relative to the base rate (the formula above)."""
        if step < self.warmup_steps:
            return self.start_factor + (1 - self.start_factor) * step / self.warmup_steps
        if self.total_steps is None:
            return 1.0
        length = max(self.total_steps - self.warmup_steps, 1)  # T
        cosine = (1 + math.cos(math.pi * min(step - self.warmup_steps, length) / length)) / 2
        return self.final_factor + (1 - self.final_factor) * cosine

    def lr_at(self, epoch):
        factor = self.factor(epoch)
        return [base * factor for base in self.base_lrs]

    def stretch(self, total_steps):
        """Set the run's length to ``total_steps`` and re-apply the current step's rate.

        The steps already taken keep the rates they had; the decay from here on ends at
        the new total.
        """
        self.total_steps = _check_int("total_steps", total_steps, 1)
        lrs = self.lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def state_dict(self):
        """The step counter, base rates and ``total_steps`` (which ``stretch`` changes)."""
        return {**super().state_dict(), "total_steps": self.total_steps}

    def load_state_dict(self, state_dict):
        total = state_dict.get("total_steps")
        self.total_steps = None if total is None else _check_int("total_steps", total, 1)
        super().load_state_dict(state_dict)
