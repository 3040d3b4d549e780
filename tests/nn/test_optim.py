"""Tests of nn.optim: update rules against hand-written formulas and torch trajectories,
param groups, skipped params, state_dict round trips, schedulers and gradient clipping."""
import math

import numpy as np
import pytest

import nn
from nn import optim
from tests.oracles import require

SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
    dict(lr=0.05, momentum=0.5, maximize=True),
]
ADAM_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
    dict(lr=0.01, amsgrad=True, weight_decay=0.01),
    dict(lr=0.01, maximize=True),
]


def _params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.normal(size=s).astype(dtype)) for s in [(3, 4), (4,), (2, 2, 3)]]


def _grads(step, params, dtype=None):
    rng = np.random.default_rng(100 + step)
    return [rng.normal(size=tuple(p.shape)).astype(dtype or p.dtype) for p in params]


def _run_ours(opt_cls, config, steps=5, dtype=np.float64):
    params = _params(dtype=dtype)
    opt = opt_cls(params, **config)
    for step in range(steps):
        for p, g in zip(params, _grads(step, params)):
            p.grad = g
        opt.step()
    return [p.data for p in params]


def _run_torch(torch, opt_cls, config, steps=5):
    params = [torch.tensor(p.data, requires_grad=True) for p in _params()]
    opt = opt_cls(params, **config)
    for step in range(steps):
        for p, g in zip(params, _grads(step, params, np.float64)):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


# ------------------------------------------------------------ hand formulas
def test_sgd_momentum_by_hand():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = np.array([1.0, 1.0])
    opt.step()  # g = [1.5, 0], buf = g
    assert np.allclose(p.data, [1.0 - 0.15, -2.0])
    p.grad = np.array([0.0, 2.0])
    opt.step()  # g = [0.425, 1.0], buf = 0.9*[1.5, 0] + g
    assert np.allclose(p.data, [0.85 - 0.1 * (1.35 + 0.425), -2.0 - 0.1 * 1.0])


def test_adam_first_step_is_lr_times_sign():
    p = nn.Parameter(np.array([1.0, -1.0, 0.5]))
    opt = optim.Adam([p], lr=0.1, eps=0.0)
    p.grad = np.array([3.0, -0.2, 1e-3])
    opt.step()
    assert np.allclose(p.data, [0.9, -0.9, 0.4])


def test_adamw_decay_is_decoupled():
    p = nn.Parameter(np.array([2.0]))
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5, eps=0.0)
    p.grad = np.array([4.0])
    opt.step()
    assert np.allclose(p.data, [2.0 * (1 - 0.05) - 0.1])


# ------------------------------------------------------------ behaviour
@pytest.mark.parametrize("opt_cls, config", [(optim.SGD, SGD_CONFIGS[3]), (optim.Adam, ADAM_CONFIGS[1]),
                                             (optim.AdamW, ADAM_CONFIGS[0])])
def test_float32_stays_float32(opt_cls, config):
    out = _run_ours(opt_cls, config, steps=3, dtype=np.float32)
    assert all(a.dtype == np.float32 for a in out)


def test_params_without_grad_are_skipped_and_groups_override():
    a, b, c = _params()
    before_c = c.data.copy()
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 1.0}], lr=0.1, momentum=0.9)
    a.grad, b.grad = np.ones(a.shape), np.ones(b.shape)
    a0, b0 = a.data.copy(), b.data.copy()
    opt.step()
    assert np.allclose(a.data, a0 - 0.1) and np.allclose(b.data, b0 - 1.0)
    assert np.array_equal(c.data, before_c) and c not in opt.state
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_step_with_closure_returns_loss():
    w = nn.Parameter(np.array([3.0]))
    opt = optim.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    for _ in range(20):
        loss = opt.step(closure)
    assert abs(w.data[0]) < 1e-4 and loss.item() < 1e-6


def test_training_a_linear_regression_converges():
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3
    model = nn.Linear(3, 1)
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 1e-4
    assert np.allclose(model.weight.data.ravel(), [1.0, -2.0, 0.5], atol=0.01)


@pytest.mark.parametrize("opt_cls, config", [(optim.SGD, SGD_CONFIGS[2]), (optim.Adam, ADAM_CONFIGS[2]),
                                             (optim.AdamW, ADAM_CONFIGS[1])])
def test_state_dict_resume_matches_uninterrupted(opt_cls, config, tmp_path):
    full = _run_ours(opt_cls, config, steps=6)
    params = _params()
    opt = opt_cls(params, **config)
    for step in range(3):
        for p, g in zip(params, _grads(step, params)):
            p.grad = g
        opt.step()
    path = tmp_path / "ckpt.npz"
    nn.save({"params": [p.data for p in params], "optimizer": opt.state_dict()}, path)
    ckpt = nn.load(path)
    params2 = [nn.Parameter(a) for a in ckpt["params"]]
    opt2 = opt_cls(params2, **{**config, "lr": 123.0})  # lr comes back from the checkpoint
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.param_groups[0]["lr"] == config["lr"]
    for step in range(3, 6):
        for p, g in zip(params2, _grads(step, params2)):
            p.grad = g
        opt2.step()
    for a, b in zip(full, params2):
        assert np.array_equal(a, b.data)


def test_load_state_dict_rejects_mismatch_without_changes():
    params = _params()
    opt = optim.Adam(params, lr=0.1)
    for p, g in zip(params, _grads(0, params)):
        p.grad = g
    opt.step()
    state = opt.state_dict()
    other = optim.Adam(_params()[:2], lr=0.1)
    with pytest.raises(ValueError, match="parameters"):
        other.load_state_dict(state)
    bad = opt.state_dict()
    bad["state"][1]["exp_avg"] = np.zeros(7)
    fresh = optim.Adam(_params(), lr=0.5)
    with pytest.raises(ValueError, match=r"\[1\]\['exp_avg'\].*shape"):
        fresh.load_state_dict(bad)
    assert fresh.state == {} and fresh.param_groups[0]["lr"] == 0.5
    bad = opt.state_dict()
    bad["state"][0]["exp_avg_sq"] = bad["state"][0]["exp_avg_sq"] * np.nan
    with pytest.raises(ValueError, match="not finite"):
        fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="keys"):
        fresh.load_state_dict({"state": {}})


@pytest.mark.parametrize("call, exc, match", [
    (lambda p: optim.SGD(p, lr=-1), ValueError, "lr"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), ValueError, "nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (lambda p: optim.Adam(p, eps=-1e-8), ValueError, "eps"),
    (lambda p: optim.Adam([{"params": p, "momentum": 0.9}]), ValueError, "unknown"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, "empty"),
    (lambda p: optim.SGD(p + p[:1], lr=0.1), ValueError, "more than once"),
    (lambda p: optim.SGD([np.zeros(3)], lr=0.1), TypeError, "Tensor"),
    (lambda p: optim.SGD(p[0], lr=0.1), TypeError, "single Tensor"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call(_params())


def test_repr_lists_groups():
    text = repr(optim.SGD(_params(), lr=0.1, momentum=0.9))
    assert "Parameter Group 0" in text and "momentum: 0.9" in text


# ------------------------------------------------------------ schedulers
def _lr_trajectory(opt, sched, steps):
    """The first group's lr before and after each of ``steps`` optimizer and scheduler
    steps (ours or torch's: the same method names)."""
    out = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def _lrs(sched_factory, steps, base=0.1):
    opt = optim.SGD(_params(), lr=base)
    sched = sched_factory(opt)
    out = _lr_trajectory(opt, sched, steps)
    assert out[-1] == sched.get_last_lr()[0]
    return out


def test_step_and_cosine_by_hand():
    assert np.allclose(_lrs(lambda o: optim.StepLR(o, 2, 0.5), 5), [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    cos = _lrs(lambda o: optim.CosineAnnealingLR(o, T_max=4, eta_min=0.01), 4)
    assert np.allclose(cos, [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)])
    assert np.isclose(cos[-1], 0.01)
    warm = _lrs(lambda o: optim.LinearWarmup(o, 4, start_factor=0.2), 6)
    assert np.allclose(warm, [0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.1])


def test_scheduler_resume(tmp_path):
    opt = optim.SGD(_params(), lr=0.1)
    sched = optim.LinearWarmup(opt, 3, after=optim.CosineAnnealingLR(opt, T_max=10))
    for _ in range(5):
        sched.step()
    nn.save({"sched": sched.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.npz")
    state = nn.load(tmp_path / "s.npz")
    opt2 = optim.SGD(_params(), lr=0.1)
    sched2 = optim.LinearWarmup(opt2, 3, after=optim.CosineAnnealingLR(opt2, T_max=10))
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    for _ in range(4):
        sched.step()
        sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def _warmup_cosine(t, base, warmup, total, start, final):
    """The closed form of WarmupCosine's docstring."""
    if t < warmup:
        return base * (start + (1 - start) * t / warmup)
    length = max(total - warmup, 1)
    return base * (final + (1 - final) * (1 + math.cos(math.pi * min(t - warmup, length) / length)) / 2)


@pytest.mark.parametrize("warmup, total, start, final", [
    (4, 12, 0.05, 0.02), (0, 7, 0.5, 0.0), (3, 3, 0.1, 0.1), (5, 2, 1.0, 0.5),
])
def test_warmup_cosine_closed_form(warmup, total, start, final):
    rates = _lrs(lambda o: optim.WarmupCosine(o, warmup, total, final_factor=final,
                                              start_factor=start), total + 4)
    expected = [_warmup_cosine(t, 0.1, warmup, total, start, final) for t in range(total + 5)]
    assert np.allclose(rates, expected, rtol=1e-12, atol=0)
    assert rates[-1] == pytest.approx(0.1 * final)  # the floor holds after the total


def test_warmup_cosine_equals_linear_warmup_then_cosine():
    composed = _lrs(lambda o: optim.LinearWarmup(
        o, 5, 0.05, after=optim.CosineAnnealingLR(o, T_max=15, eta_min=0.1 * 0.02)), 20)
    assert np.allclose(_lrs(lambda o: optim.WarmupCosine(o, 5, 20), 20), composed, rtol=1e-12)


def test_warmup_cosine_stretched_to_a_new_total(tmp_path):
    opt = optim.SGD(_params(), lr=0.1)
    sched = optim.WarmupCosine(opt, 3, total_steps=None, start_factor=0.2)
    for _ in range(6):  # unknown total: base rate after the warm-up
        sched.step()
    assert sched.get_last_lr() == [0.1]
    sched.stretch(10)  # step 6 of 10
    assert opt.param_groups[0]["lr"] == pytest.approx(_warmup_cosine(6, 0.1, 3, 10, 0.2, 0.02))
    nn.save({"sched": sched.state_dict()}, tmp_path / "s.npz")
    again = optim.WarmupCosine(optim.SGD(_params(), lr=0.1), 3, total_steps=None, start_factor=0.2)
    again.load_state_dict(nn.load(tmp_path / "s.npz")["sched"])
    assert again.total_steps == 10 and again.get_last_lr() == sched.get_last_lr()
    sched.stretch(40)  # the machine got faster: a longer decay from here
    for _ in range(4):
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(_warmup_cosine(10, 0.1, 3, 40, 0.2, 0.02))
    with pytest.raises(ValueError, match="total_steps"):
        sched.stretch(0)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.WarmupCosine(opt, -1, 10)
    with pytest.raises(ValueError, match="final_factor"):
        optim.WarmupCosine(opt, 2, 10, final_factor=1.5)
    with pytest.raises(ValueError, match="start_factor"):
        optim.WarmupCosine(opt, 2, 10, start_factor=0)


def test_scheduler_bad_args():
    opt = optim.SGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, 0)
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="start_factor"):
        optim.LinearWarmup(opt, 5, start_factor=0.0)
    with pytest.raises(TypeError, match="optimizer"):
        optim.StepLR("sgd", 3)
    other = optim.SGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match="same optimizer"):
        optim.LinearWarmup(opt, 2, after=optim.StepLR(other, 3))


# ------------------------------------------------------------ clipping
def test_clip_grad_norm():
    a, b, c = _params()
    a.grad, b.grad = np.full(a.shape, 3.0), np.full(b.shape, 4.0)
    total = math.sqrt(12 * 9 + 4 * 16)
    assert math.isclose(optim.clip_grad_norm_([a, b, c], max_norm=1.0), total)
    new_total = math.sqrt(np.sum(a.grad ** 2) + np.sum(b.grad ** 2))
    assert abs(new_total - 1.0) < 1e-5
    before = a.grad.copy()
    assert optim.clip_grad_norm_([a], max_norm=100.0) == pytest.approx(np.linalg.norm(before))
    assert np.array_equal(a.grad, before)
    assert optim.clip_grad_norm_([a, b], 1.0, norm_type=float("inf")) == pytest.approx(b.grad.max())
    assert optim.clip_grad_norm_([c], 1.0) == 0.0
    a.grad[0, 0] = np.nan
    with pytest.raises(RuntimeError, match="norm"):
        optim.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm_([a], -1.0)
    b.grad = np.array([-5.0, 0.5, 2.0, -0.1])
    optim.clip_grad_value_([b], 1.0)
    assert np.array_equal(b.grad, [-1.0, 0.5, 1.0, -0.1])


# ------------------------------------------------------------ oracles
@pytest.mark.oracle
@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_sgd_trajectory_matches_torch(config):
    torch = require("torch")
    ours = _run_ours(optim.SGD, config)
    theirs = _run_torch(torch, torch.optim.SGD, config)
    for a, b in zip(ours, theirs):
        assert np.allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("config", ADAM_CONFIGS)
def test_adam_trajectory_matches_torch(name, config):
    torch = require("torch")
    ours = _run_ours(getattr(optim, name), config, steps=8)
    theirs = _run_torch(torch, getattr(torch.optim, name), config, steps=8)
    for a, b in zip(ours, theirs):
        assert np.allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.oracle
def test_schedulers_match_torch():
    torch = require("torch")
    sched = torch.optim.lr_scheduler

    def torch_lrs(factory, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        return _lr_trajectory(opt, factory(opt), steps)

    cases = [
        (lambda o: optim.StepLR(o, 3, 0.3), lambda o: sched.StepLR(o, 3, 0.3)),
        (lambda o: optim.MultiStepLR(o, [2, 5], 0.5), lambda o: sched.MultiStepLR(o, [2, 5], 0.5)),
        (lambda o: optim.CosineAnnealingLR(o, 7, 0.001), lambda o: sched.CosineAnnealingLR(o, 7, 0.001)),
        (lambda o: optim.LinearLR(o, 0.25, 1.0, 4), lambda o: sched.LinearLR(o, 0.25, 1.0, 4)),
        (lambda o: optim.LinearWarmup(o, 3, 0.1, after=optim.CosineAnnealingLR(o, 6)),
         lambda o: sched.SequentialLR(o, [sched.LinearLR(o, 0.1, 1.0, 3), sched.CosineAnnealingLR(o, 6)],
                                      milestones=[3])),
    ]
    for ours, theirs in cases:
        assert np.allclose(_lrs(ours, 9), torch_lrs(theirs, 9), rtol=1e-9, atol=1e-12)


@pytest.mark.oracle
def test_clip_grad_norm_matches_torch():
    torch = require("torch")
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=s) * 3 for s in [(3, 4), (5,)]]
    for norm_type in (2.0, 1.0, float("inf")):
        ours = [nn.Parameter(np.zeros(g.shape)) for g in grads]
        for p, g in zip(ours, grads):
            p.grad = g.copy()
        theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for p, g in zip(theirs, grads):
            p.grad = torch.tensor(g)
        total = optim.clip_grad_norm_(ours, 2.0, norm_type)
        t_total = torch.nn.utils.clip_grad_norm_(theirs, 2.0, norm_type)
        assert math.isclose(total, float(t_total), rel_tol=1e-12)
        for p, q in zip(ours, theirs):
            assert np.allclose(p.grad, q.grad.numpy(), rtol=1e-12)
