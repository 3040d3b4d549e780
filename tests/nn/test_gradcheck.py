"""Tests of nn.gradcheck itself, and a check that every Function of the nn core is
covered by a gradient check somewhere in tests/nn."""
import importlib
import inspect
import pathlib

import numpy as np
import pytest

import nn
from nn.gradient_check import GradcheckError
from nn.tensor import Function


class Square(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class WrongSquare(Square):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        wrong = 2 * x * grad
        wrong[1, 2] *= 1.5  # one wrong element
        return wrong


class Flaky(Square):
    calls = 0

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        Flaky.calls += 1
        return 2 * x * grad * (1 + 1e-12 * Flaky.calls)


def _x():
    return nn.Tensor(np.random.default_rng(0).normal(size=(3, 4)), requires_grad=True)


def test_passes_for_a_correct_backward():
    assert nn.gradcheck(Square.apply, [_x()]) is True
    assert nn.gradcheck(Square.apply, _x()) is True  # a single Tensor is accepted


def test_reports_worst_element_index_and_values():
    with pytest.raises(GradcheckError, match=r"input 0 at index \(1, 2\): analytic .* vs numeric") as err:
        nn.gradcheck(WrongSquare.apply, [_x()])
    assert isinstance(err.value, AssertionError)


def test_detects_nondeterministic_backward():
    with pytest.raises(GradcheckError, match="not deterministic"):
        nn.gradcheck(Flaky.apply, [_x()])


def test_checks_only_inputs_requiring_grad_and_passes_others_through():
    x = _x()
    scale = nn.Tensor(np.full((3, 4), 2.0))  # not checked

    def fn(a, b, power):
        return (a * b) ** power

    assert nn.gradcheck(fn, [x, scale, 2])


def test_tolerances_are_respected():
    def almost(x):
        # backward exact, forward perturbed by ~1e-4 relative: numeric differs by ~1e-4
        return Square.apply(x) + nn.Tensor(x.data * 1e-4)

    assert nn.gradcheck(almost, [_x()], atol=1e-3, rtol=1e-3)
    with pytest.raises(GradcheckError):
        nn.gradcheck(almost, [_x()], atol=1e-7, rtol=1e-7)


def test_bad_arguments():
    with pytest.raises(TypeError, match="float64"):
        nn.gradcheck(Square.apply, [nn.Tensor(np.ones(2, np.float32), requires_grad=True)])
    with pytest.raises(ValueError, match="no input has requires_grad"):
        nn.gradcheck(Square.apply, [nn.Tensor(np.ones(2))])
    with pytest.raises(TypeError, match="must return a Tensor"):
        nn.gradcheck(lambda x: x.data, [_x()])
    with pytest.raises(GradcheckError, match="does not depend"):
        nn.gradcheck(lambda x: nn.Tensor(np.ones(2)), [_x()])


# ------------------------------------------------------------ coverage
CORE_MODULES = ["nn.tensor", "nn.functional.activation", "nn.functional.dense", "nn.functional.loss"]
TESTS = pathlib.Path(__file__).parent
# Function -> the public call a gradcheck in tests/nn exercises it through.
COVERED = {
    "Cast": "astype", "Add": "x + y", "Sub": "x - y", "Mul": "x * y", "Div": "x / y",
    "Neg": "-x", "PowScalar": "t ** 3", "Pow": "y ** x", "MatMul": "x @ y", "Exp": "t.exp()",
    "Log": "t.log()", "Sqrt": "t.sqrt()", "Abs": "t.abs()", "Clip": "t.clip(",
    "Sum": "t.sum(", "Mean": "t.mean(", "Max": "t.max(", "Reshape": "t.reshape(",
    "Transpose": "t.transpose(", "GetItem": "t[index]", "Concat": "nn.concat(", "Stack": "nn.stack(",
    "Where": "nn.where(",
    "ReLUFunction": "F.relu", "LeakyReLUFunction": "F.leaky_relu", "SigmoidFunction": "F.sigmoid",
    "TanhFunction": "F.tanh", "SoftmaxFunction": "F.softmax", "LogSoftmaxFunction": "F.log_softmax",
    "DropoutFunction": "F.dropout", "LinearFunction": "F.linear",
    "CrossEntropyFunction": "F.cross_entropy", "BCEWithLogitsFunction": "F.binary_cross_entropy_with_logits",
    "SigmoidFocalLossFunction": "F.sigmoid_focal_loss", "SmoothL1Function": "F.smooth_l1_loss",
    "L1Function": "F.l1_loss", "MSEFunction": "F.mse_loss",
}


def _core_functions():
    found = {}
    for name in CORE_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Function) and value is not Function \
                    and value.__module__ == name:
                found[attr] = value
    return found


def test_every_core_function_has_a_gradient_check():
    functions = _core_functions()
    missing = sorted(set(functions) - set(COVERED))
    assert not missing, f"Functions without a registered gradient check: {missing}"
    sources = {p.name: p.read_text() for p in TESTS.glob("test_*.py")}
    for name, call in COVERED.items():
        assert name in functions, f"COVERED lists {name}, which no longer exists"
        hits = [f for f, text in sources.items()
                if call in text and "gradcheck" in text and f != pathlib.Path(__file__).name]
        assert hits or call == "astype", f"no test file calls {call!r} next to a gradcheck"


def test_cast_gradcheck():
    x = _x()
    assert nn.gradcheck(lambda t: t.astype(np.float64) * 2.0, [x])
