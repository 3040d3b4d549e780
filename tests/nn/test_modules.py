"""Tests of Module, Parameter, containers, Linear, activations and Dropout modules."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import nn
from tests.oracles import require


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        self.heads = nn.ModuleList([nn.Linear(2, 1), nn.Linear(2, 1, bias=False)])
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.register_buffer("count", np.zeros(1, dtype=np.int64))

    def forward(self, x):
        h = self.body(x) * self.scale
        return nn.concat([head(h) for head in self.heads], axis=-1)


# ------------------------------------------------------------------ Module
def test_named_parameters_buffers_and_state_dict():
    net = TinyNet()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                     "heads.0.weight", "heads.0.bias", "heads.1.weight"]
    assert [n for n, _ in net.named_buffers()] == ["count"]
    state = net.state_dict()
    assert list(state) == names + ["count"]
    assert net.num_parameters() == 1 + 12 + 4 + 8 + 2 + 2 + 1 + 2
    state["body.0.weight"][...] = 0  # a copy: the model is untouched
    assert not np.all(net.body[0].weight.data == 0)


def test_shared_parameter_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2


def test_load_state_dict_roundtrip_and_checks():
    a, b = TinyNet(), TinyNet()
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and np.array_equal(pa.data, pb.data)

    before = {k: v.copy() for k, v in b.state_dict().items()}
    bad = a.state_dict()
    bad["body.2.weight"] = np.zeros((5, 2), dtype=np.float32)
    bad["body.0.weight"] = bad["body.0.weight"] * 2  # valid, must not be applied
    with pytest.raises(ValueError, match=r"body\.2\.weight.*shape"):
        b.load_state_dict(bad)
    assert all(np.array_equal(v, b.state_dict()[k]) for k, v in before.items())

    bad = a.state_dict()
    bad["heads.0.bias"] = bad["heads.0.bias"].astype(np.float64)
    with pytest.raises(ValueError, match=r"heads\.0\.bias.*dtype"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    bad["scale"] = np.array([np.nan], dtype=np.float32)
    with pytest.raises(ValueError, match=r"scale.*NaN"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    del bad["count"]
    bad["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match="count"):
        b.load_state_dict(bad)
    result = b.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["count"] and result.unexpected_keys == ["extra"]
    with pytest.raises(TypeError, match="mapping"):
        b.load_state_dict([1, 2])


def test_train_eval_zero_grad_and_repr():
    net = TinyNet()
    net.eval()
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    out = net(nn.Tensor(np.ones((2, 3), dtype=np.float32)))
    assert out.shape == (2, 2) and out.dtype == np.float32
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    text = repr(net)
    assert "(body): Sequential(" in text
    assert "(0): Linear(in_features=3, out_features=4, bias=True)" in text
    assert "(1): Linear(in_features=2, out_features=1, bias=False)" in text


def test_assign_before_init_is_clear():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="Module.__init__"):
        Broken()


# ------------------------------------------------------------------ Linear
def test_linear_default_init_bounds_and_dtype():
    nn.manual_seed(0)
    lin = nn.Linear(64, 300)
    bound = 1 / math.sqrt(64)
    assert lin.weight.shape == (64, 300) and lin.weight.dtype == np.float32
    assert np.abs(lin.weight.data).max() <= bound
    assert np.abs(lin.weight.data).max() > 0.95 * bound
    assert np.abs(lin.bias.data).max() <= bound
    assert abs(lin.weight.data.std() - bound / math.sqrt(3)) < 0.05 * bound
    lin64 = nn.Linear(3, 2, dtype=np.float64)
    assert lin64.weight.dtype == np.float64
    assert lin64(np.ones((4, 3))).dtype == np.float64


def test_linear_seeded_reproducible_and_generator():
    nn.manual_seed(5)
    a = nn.Linear(4, 3)
    nn.manual_seed(5)
    b = nn.Linear(4, 3)
    assert np.array_equal(a.weight.data, b.weight.data)
    c = nn.Linear(4, 3, generator=np.random.default_rng(9))
    d = nn.Linear(4, 3, generator=np.random.default_rng(9))
    assert np.array_equal(c.bias.data, d.bias.data)


@pytest.mark.parametrize("args, exc", [((-1, 3), ValueError), ((2.5, 3), ValueError),
                                       ((2, 3, True, np.int32), TypeError)])
def test_linear_bad_args(args, exc):
    with pytest.raises(exc):
        nn.Linear(*args)


@pytest.mark.oracle
def test_linear_module_matches_torch_with_same_weights():
    torch = require("torch")
    lin = nn.Linear(5, 3, dtype=np.float64)
    tl = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(lin.weight.data.T))
        tl.bias.copy_(torch.tensor(lin.bias.data))
    x = np.random.default_rng(0).normal(size=(7, 5))
    assert np.allclose(lin(x).data, tl(torch.tensor(x)).detach().numpy(), atol=1e-12)


# -------------------------------------------------------------- containers
def test_sequential_indexing_slicing_append_and_names():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3
    assert isinstance(seq[-1], nn.Linear)
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2
    assert head(np.ones((1, 2), dtype=np.float32)).shape == (1, 3)
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and [type(m).__name__ for m in seq][-1] == "Sigmoid"
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    with pytest.raises(IndexError, match="out of range"):
        seq[10]
    with pytest.raises(TypeError, match="Sequential argument 1"):
        nn.Sequential(nn.ReLU(), "relu")


def test_modulelist_operations():
    ml = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    assert len(ml) == 3
    ml.append(nn.ReLU())
    ml.insert(0, nn.Identity())
    assert [type(m).__name__ for m in ml] == ["Identity", "Linear", "Linear", "Linear", "ReLU"]
    del ml[1]
    assert len(ml) == 4 and list(ml.state_dict()) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    ml[0] = nn.Tanh()
    assert isinstance(ml[0], nn.Tanh)
    assert isinstance(ml[1:], nn.ModuleList) and len(ml[1:]) == 3
    with pytest.raises(TypeError, match="Module"):
        ml.append(3)
    with pytest.raises(NotImplementedError):
        ml(1)


# -------------------------------------------------------------- activations
def test_activation_modules_match_functional():
    x = np.linspace(-2, 2, 10).reshape(2, 5)
    F = nn.functional
    assert np.array_equal(nn.ReLU()(x).data, F.relu(x).data)
    assert np.array_equal(nn.LeakyReLU(0.3)(x).data, F.leaky_relu(x, 0.3).data)
    assert np.array_equal(nn.Sigmoid()(x).data, F.sigmoid(x).data)
    assert np.array_equal(nn.Tanh()(x).data, F.tanh(x).data)
    assert np.array_equal(nn.Softmax(0)(x).data, F.softmax(x, 0).data)
    assert np.array_equal(nn.LogSoftmax()(x).data, F.log_softmax(x).data)
    t = nn.Tensor(x)
    assert nn.Identity(3, foo=1)(t) is t


def test_dropout_module_train_and_eval():
    drop = nn.Dropout(0.5, generator=3)
    x = np.ones((50, 50), dtype=np.float32)
    a, b = drop(x).data, drop(x).data
    assert not np.array_equal(a, b)  # an int seed still gives fresh masks per call
    assert set(np.unique(a)) <= {0.0, 2.0}
    drop.eval()
    assert np.array_equal(drop(x).data, x)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(-0.1)
    assert repr(drop) == "Dropout(p=0.5)"
