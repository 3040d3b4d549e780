"""A tiny trainer on the engine, for the engine's tests: a two-layer regressor with
dropout (nn's default generator) and input noise (a generator of its own), shuffled
batches (``nn.data.DataLoader``), Adam and ``WarmupCosine``. Every random draw the
engine must save and restore is in it. Run as a command::

    python tests/nn/tiny_trainer.py --data DIR --out RUN_DIR [--steps N] [--minutes M]
        [--sleep S] [--announce K]

``--sleep`` slows each step down (to leave time for a Ctrl-C), ``--announce K`` prints
``step K`` when step K starts (the signal for a test to press Ctrl-C).
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import nn  # noqa: E402
from nn.engine import (  # noqa: E402
    Engine, add_training_arguments, command_errors, load_checkpoint, parse_training_arguments,
    positive_float,
)

KIND = "tiny"


def make_data(root, count=40):
    """Write ``root/toy.npz`` (x ndarray[count, 4], y ndarray[count, 1]) unless it exists."""
    path = os.path.join(root, "toy.npz")
    if not os.path.isfile(path):
        os.makedirs(root, exist_ok=True)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(count, 4)).astype(np.float32)
        y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]]) + 0.3).astype(np.float32)
        nn.save({"x": x, "y": y}, path)
    data = nn.load(path)
    return data["x"], data["y"]


def build(config, evaluate=None):
    """The engine of a run of ``config`` (a dict: data, out, steps, minutes, seed, lr,
    eval_every, sleep, announce, quiet)."""
    x, y = make_data(config["data"])
    nn.manual_seed(config["seed"])
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    optimizer = nn.optim.Adam(model.parameters(), lr=config["lr"])
    schedule = nn.optim.WarmupCosine(optimizer, warmup_steps=3, total_steps=config["steps"])
    loader = nn.data.DataLoader(nn.data.TensorDataset(x[:32], y[:32]), batch_size=6,
                                shuffle=True, drop_last=True, seed=config["seed"])
    noise = np.random.default_rng([config["seed"], 1])

    def loss(batch):
        inputs, targets = batch
        step = engine.state["step"] + 1
        if step == config["announce"]:
            print(f"step {step}", flush=True)
        if config["sleep"]:
            time.sleep(config["sleep"])
        inputs = inputs + 0.05 * noise.standard_normal(inputs.shape).astype(np.float32)
        error = model(nn.Tensor(inputs)) - nn.Tensor(targets)
        squared = (error * error).mean()
        return {"loss": squared, "rmse": squared.data ** 0.5}

    def validation():
        model.eval()
        with nn.no_grad():
            error = model(nn.Tensor(x[32:])).data - y[32:]
        return {"val_mse": float(np.mean(error ** 2))}

    engine = Engine(config["out"], KIND, model, optimizer, loss, loader,
                    evaluate or validation, metric="val_mse", mode="min", schedule=schedule,
                    steps=config["steps"], minutes=config["minutes"],
                    eval_every=config["eval_every"], generators={"noise": noise},
                    config=config, quiet=config["quiet"])
    return engine


def train(config, resume=False):
    """Train (or continue) a run; write metrics.json. Returns what it holds."""
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(os.path.join(config["out"], "last.npz"), KIND)
        config = {**checkpoint["config"], "quiet": config["quiet"]}
    engine = build(config)
    engine.fit(checkpoint)
    return engine.write_results({"final_val_mse": engine.evaluate()["val_mse"]})


def build_parser():
    parser = argparse.ArgumentParser(prog=f"python {os.path.abspath(__file__)}",
                                     description="A tiny regression trained on the engine.")
    add_training_arguments(parser, minutes=1.0)
    parser.add_argument("--lr", type=positive_float, default=0.01)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--announce", type=int, default=0)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parse_training_arguments(parser, argv, KIND)
    config = {"data": args.data, "out": args.out, "steps": args.steps, "minutes": args.minutes,
              "seed": args.seed, "lr": args.lr, "eval_every": args.eval_every,
              "sleep": args.sleep, "announce": args.announce, "quiet": args.quiet}
    with command_errors(parser, argv):
        result = train(config, resume=args.resume)
    print(f"trained {result['steps']} steps: val_mse {result['final_val_mse']:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
