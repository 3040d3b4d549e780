"""01 — Autograd from the ground up: graphs, gradients, and a first classifier.

Everything in detseg trains by gradient descent, and every gradient comes from one
idea: record the operations of the forward pass as a graph, then apply the chain
rule backwards through it (reverse-mode automatic differentiation; micrograd and
PyTorch work the same way). This tutorial

1. builds a small expression and walks its graph,
2. computes its gradient with ``backward()`` and checks it against calculus,
3. checks a gradient numerically with ``nn.gradcheck`` (central differences),
4. trains a small MLP to separate two interleaved spirals and plots its decision
   boundary.

Run it with ``python examples/01_autograd.py`` (``--quick`` for a few-second run;
``--out DIR`` chooses where the figure goes, ``out/`` by default).
"""
import argparse
import os
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
import nn.functional as F  # noqa: E402

# %% Configuration
# A short block of named constants; --quick shrinks the run for CI.
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="tiny data and few epochs (seconds)")
parser.add_argument("--out", default="out", help="directory for the figure")
args = parser.parse_args()

SEED = 0
POINTS_PER_CLASS = 150 if args.quick else 400
EPOCHS = 60 if args.quick else 150
BATCH_SIZE = 64
HIDDEN = 64
LEARNING_RATE = 0.01
nn.manual_seed(SEED)

# %% 1. A small expression and its graph
# Each arithmetic operation on Tensors creates a new Tensor that remembers the
# Function that produced it (``grad_fn``) and its inputs (``parents``).
a = nn.Tensor(np.array(2.0), requires_grad=True)
b = nn.Tensor(np.array(-3.0), requires_grad=True)
c = a * b            # -6
d = c + b ** 2       # 3
e = d.exp()          # exp(3)
f = e / (a + 1.0)    # exp(3) / 3
print(f"f = {f.item():.6f}")


def walk(tensor, names, depth=0, seen=None):
    """Print the graph below ``tensor``: one line per node, inputs indented."""
    seen = set() if seen is None else seen
    name = names.get(id(tensor), "·")
    kind = tensor.grad_fn.__name__ if tensor.grad_fn is not None else "leaf"
    again = " (already shown)" if id(tensor) in seen else ""
    print(f"{'    ' * depth}{name:>2} = {kind:<10} value {float(tensor.data):9.4f}{again}")
    if again:
        return
    seen.add(id(tensor))
    for parent in tensor.parents:
        walk(parent, names, depth + 1, seen)


print("\nThe graph of f (a and b are leaves; b is reached twice):")
walk(f, {id(a): "a", id(b): "b", id(c): "c", id(d): "d", id(e): "e", id(f): "f"})

# %% 2. Backward: the chain rule, node by node in reverse topological order
# f = exp(ab + b²) / (a + 1), so by hand
#   df/da = f·b − f/(a + 1)          df/db = f·(a + 2b)
f.backward()
fa_hand = f.item() * b.item() - f.item() / (a.item() + 1)
fb_hand = f.item() * (a.item() + 2 * b.item())
print(f"\ndf/da: autograd {a.grad.item():+.6f}   by hand {fa_hand:+.6f}")
print(f"df/db: autograd {b.grad.item():+.6f}   by hand {fb_hand:+.6f}")
assert np.isclose(a.grad.item(), fa_hand) and np.isclose(b.grad.item(), fb_hand)

# %% 3. A numerical gradient check
# nn.gradcheck perturbs every input element by ±eps (float64) and compares the
# central difference (L(x+eps) − L(x−eps)) / 2eps with what backward computed.
# It is how every Function in this library is tested.
rng = np.random.default_rng(SEED)
x = nn.Tensor(rng.normal(size=(4, 3)), requires_grad=True)
w = nn.Tensor(rng.normal(size=(3, 5)), requires_grad=True)
labels = np.array([0, 4, 2, 2])
ok = nn.gradcheck(lambda x, w: F.cross_entropy(F.tanh(x @ w), labels), [x, w])
print(f"\ngradcheck of cross_entropy(tanh(x @ w)): {ok}")


# %% 4. Data: two interleaved spirals
# A classic set no straight line separates: the classifier has to bend.
def two_spirals(n, noise, rng):
    """n points per class; returns points (2n, 2) float32 and labels (2n,) int64."""
    t = np.sqrt(rng.uniform(0.05, 1.0, size=n)) * 3 * np.pi  # angle, denser near the centre
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)  # (n, 2) in [-1, 1]
    points = np.concatenate([arm, -arm]) + rng.normal(scale=noise, size=(2 * n, 2))
    labels = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int64)
    return points.astype(np.float32), labels


points, targets = two_spirals(POINTS_PER_CLASS, noise=0.03, rng=rng)
loader = nn.data.DataLoader(nn.data.TensorDataset(points, targets), batch_size=BATCH_SIZE,
                            shuffle=True, seed=SEED)
print(f"\n{len(points)} points, {len(loader)} batches per epoch")

# %% 5. Model, loss, optimizer
# A multilayer perceptron: Linear -> ReLU -> Linear -> ReLU -> Linear (2 logits).
model = nn.Sequential(
    nn.Linear(2, HIDDEN), nn.ReLU(),
    nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
    nn.Linear(HIDDEN, 2),
)
print(model)
print(f"{model.num_parameters()} parameters")
optimizer = nn.optim.Adam(model.parameters(), lr=LEARNING_RATE)
scheduler = nn.optim.CosineAnnealingLR(optimizer, T_max=EPOCHS)

# %% 6. The training loop
# zero the gradients, forward, loss, backward, step — once per mini-batch.
start = time.perf_counter()
for epoch in range(EPOCHS):
    total = 0.0
    for batch_points, batch_targets in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(batch_points), batch_targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch_targets)
    scheduler.step()
    if epoch % max(1, EPOCHS // 6) == 0 or epoch == EPOCHS - 1:
        print(f"epoch {epoch:4d}  loss {total / len(points):.4f}")

with nn.no_grad():
    accuracy = float((model(points).data.argmax(axis=-1) == targets).mean())
print(f"training accuracy {accuracy:.3f} after {time.perf_counter() - start:.1f} s")

# %% 7. Look at the result: the decision boundary
# Evaluate the model on a grid covering the data and colour each cell by the
# probability of class 1.
grid_x, grid_y = np.meshgrid(np.linspace(-1.3, 1.3, 200), np.linspace(-1.3, 1.3, 200))
grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)  # (200·200, 2)
with nn.no_grad():
    probability = F.softmax(model(grid)).data[:, 1].reshape(grid_x.shape)  # (200, 200)

figure, axes = plt.subplots(figsize=(5.5, 5))
axes.contourf(grid_x, grid_y, probability, levels=20, cmap="RdBu_r", alpha=0.7)
axes.contour(grid_x, grid_y, probability, levels=[0.5], colors="k", linewidths=1.5)
axes.scatter(points[:, 0], points[:, 1], c=targets, cmap="RdBu_r", edgecolors="k", s=12)
axes.set_title(f"Two spirals, MLP decision boundary (accuracy {accuracy:.2f})")
axes.set_aspect("equal")

os.makedirs(args.out, exist_ok=True)
path = os.path.join(args.out, "01_autograd_decision_boundary.png")
# Written atomically: a temporary file in the same directory, then a rename.
fd, tmp = tempfile.mkstemp(dir=args.out, suffix=".png")
os.close(fd)
try:
    figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    os.replace(tmp, path)
finally:
    if os.path.exists(tmp):
        os.remove(tmp)
plt.close(figure)
print(f"saved {path}")
