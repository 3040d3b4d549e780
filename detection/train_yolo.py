"""Train YOLO (v1) from scratch on a Pascal VOC dataset.

The detector of ``detection.yolo`` (Redmon et al., "You Only Look Once: Unified,
Real-Time Object Detection", CVPR 2016) trained from random weights on a laptop CPU.
Command::

    python -m detection.train_yolo --data DIR --out RUN_DIR [--classes car plate]
        [--minutes 15 | --steps N] [--seed 0] [--threads 1] [--resume] [--quick] [--quiet]
        [--batch-size 8] [--lr 1e-3] [--stride 16|32] [--width W]

``DIR`` is an existing Pascal VOC dataset (``detection.datasets.voc``; the plate scenes
are made by ``python -m plates.synthetic plates --out DIR ...``); ``--classes`` picks the
classes to detect (default: every class of the dataset but the background).

This page says what is trained: the model, its loss and its evaluation. The loop, the
time budget, the checkpoints, ``--resume`` and Ctrl-C are the engine's (``nn.engine``);
the data, the augmentation and the COCO evaluation are the RetinaNet trainer's
(``detection.train_retinanet``: images resized to ``image_size`` squares, random
rescaling and crop, colour jitter, no flip). ``RUN_DIR`` receives ``last.npz`` and
``best.npz`` (the best val COCO mAP), ``history.json``, ``metrics.json`` (the best
checkpoint on the val and test splits: the 12 COCO numbers, AP per class, AP50 per
class, inference time), ``loss_curves.png`` (the five loss terms), ``detections.png``
and ``pr_curves.png``.

Schedule: AdamW, linear warm-up, cosine decay to ``final_lr_factor · lr``
(``nn.optim.WarmupCosine``), the total fitted to the time budget by the engine unless
``--steps`` fixes it.
"""
import argparse
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from matplotlib.figure import Figure

import nn
from nn.engine import (Engine, ResumeError, add_training_arguments, command_errors,
                       load_checkpoint, parse_training_arguments, positive_float, positive_int)
from detection.datasets.collate import collate_detection
from detection.datasets.voc import VOCDataset
from detection.train_retinanet import (build_datasets, class_names, draw_detections, evaluate,
                                       measure_inference)
from detection.visualize import plot_pr_curves, save_figure
from detection.yolo import YOLO, YOLOConfig

__all__ = ["KIND", "TrainConfig", "yolo_config", "build_model", "load_run", "train_yolo",
           "plot_losses", "build_parser", "config_from_args", "main"]

KIND = "yolo"  # the trainer's name in its checkpoints
LOSS_TERMS = ("coord", "size", "object", "no_object", "class")


def yolo_config(num_classes, quick=False, **overrides):
    """The YOLO configuration of a training run (``quick``: a tiny network)."""
    settings = dict(num_classes=num_classes)
    if quick:
        settings.update(width_multiplier=0.5, head_channels=16)
    settings.update(overrides)
    return YOLOConfig(**settings).validate()


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in every checkpoint).

    Attributes:
        data (str): dataset root (Pascal VOC layout).
        out (str): run directory.
        classes (tuple[str] | None): the classes to detect, labelled 1..C in this order;
            None: every class of the dataset's ``labels.txt`` but the first (background).
        minutes (float or None), steps (int or None): the budget (at least one).
        seed (int): seeds initialisation, shuffling and augmentation.
        quick (bool): a seconds-long smoke run (tiny model, few images and steps).
        image_size (int): training resolution (square; a multiple of the stride), so
            S = image_size / stride.
        batch_size (int), lr (float), weight_decay (float): AdamW.
        warmup_steps (int), final_lr_factor (float): the schedule.
        clip_grad (float): gradient norm clip (0 = off).
        min_scale, max_scale (float), jitter (float): augmentation.
        eval_at (tuple of float): fractions of the run at which val is evaluated.
        checkpoint_minutes (float): save ``last.npz`` at least this often.
        max_train_images, max_val_images (int or None): use only the first images.
        model (dict): ``YOLOConfig`` overrides.
        progress (bool): show a progress bar.
    """

    data: str = "data/plates"
    out: str = "runs/yolo"
    classes: tuple = None
    minutes: float = 15.0
    steps: int = None
    seed: int = 0
    quick: bool = False
    image_size: int = 256
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 5e-4  # the paper's
    warmup_steps: int = 100
    final_lr_factor: float = 0.02
    clip_grad: float = 10.0
    min_scale: float = 0.75
    max_scale: float = 1.25
    jitter: float = 0.2
    eval_at: tuple = (0.5, 0.75, 1.0)
    checkpoint_minutes: float = 3.0
    max_train_images: int = None
    max_val_images: int = None
    model: dict = field(default_factory=dict)
    progress: bool = True

    def validate(self):
        if self.minutes is None and self.steps is None:
            raise ValueError("give minutes, steps or both")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be > 0 or None, got {self.minutes!r}")
        for name in ("steps", "max_train_images", "max_val_images"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if self.classes is not None and (
                isinstance(self.classes, str) or not self.classes
                or not all(isinstance(c, str) for c in self.classes)
                or len(set(self.classes)) != len(self.classes)):
            raise ValueError(f"classes must be distinct class names or None, got {self.classes!r}")
        for name in ("batch_size", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0):
            raise ValueError("need lr > 0, weight_decay >= 0 and warmup_steps >= 0, got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup_steps}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, "
                             f"{self.max_scale}")
        if not self.eval_at or any(not 0 < f <= 1 for f in self.eval_at) \
                or list(self.eval_at) != sorted(self.eval_at):
            raise ValueError(f"eval_at must be increasing fractions in (0, 1], got {self.eval_at}")
        if not isinstance(self.model, dict):
            raise TypeError(f"model must be a dict of YOLOConfig overrides, got "
                            f"{type(self.model).__name__}")
        unknown = set(self.model) - {f.name for f in fields(YOLOConfig)}
        if unknown:
            raise ValueError(f"model has unknown YOLOConfig fields {sorted(unknown)}")
        stride = self.model.get("stride", YOLOConfig.stride)
        if self.image_size % stride:
            raise ValueError(f"image_size must be a multiple of the stride {stride}, got "
                             f"{self.image_size}")
        return self


def _model_config(config):
    return yolo_config(len(class_names(config)), quick=config.quick, **config.model)


def build_model(config):
    """A freshly initialised YOLO for ``config`` (seeded by ``config.seed``)."""
    nn.manual_seed(config.seed)
    return YOLO(_model_config(config))


def load_run(path):
    """A run's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    model = YOLO(YOLOConfig(**checkpoint["info"]["model_config"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


def _config_from(saved):
    """The ``TrainConfig`` saved in a checkpoint (a ResumeError if it is not one)."""
    try:
        values = dict(saved)
        values["eval_at"] = tuple(values["eval_at"])
        if values.get("classes") is not None:
            values["classes"] = tuple(values["classes"])
        return TrainConfig(**values).validate()
    except (KeyError, TypeError, ValueError) as error:
        raise ResumeError(f"the checkpoint's configuration is not a YOLO run's: {error}") from None


def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return replace(config, steps=config.steps or 6, warmup_steps=min(config.warmup_steps, 2),
                   eval_at=(1.0,), batch_size=min(config.batch_size, 4),
                   max_train_images=min(config.max_train_images or 16, 16),
                   max_val_images=min(config.max_val_images or 8, 8))


# ---------------------------------------------------------------------- figures
def plot_losses(history, path):
    """The five loss terms (per step, moving mean) and val mAP at each evaluation.

    Args:
        history (dict): the engine's: ``losses`` (name -> per-step values) and
            ``evaluations`` (dicts with ``step``, ``map``, ``ap50_per_class``).
        path (str): PNG file.
    """
    figure = Figure(figsize=(10, 4))
    ax_loss, ax_map = figure.subplots(1, 2)
    for key in ("loss",) + LOSS_TERMS:
        values = np.asarray(history["losses"].get(key, []), dtype=np.float64)
        if values.size == 0:
            continue
        window = max(1, min(50, values.size // 10))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")  # moving mean
        ax_loss.plot(np.arange(window, values.size + 1), smooth,
                     label="total" if key == "loss" else key)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss per image (moving mean)")
    ax_loss.set_title("YOLO loss terms")
    ax_loss.legend(fontsize=7)
    evals = history["evaluations"]
    if evals:
        x = [e["step"] for e in evals]
        ax_map.plot(x, [e["map"] for e in evals], "o-", label="COCO mAP")
        for name in evals[-1]["ap50_per_class"]:
            ax_map.plot(x, [e["ap50_per_class"].get(name, float("nan")) for e in evals], "s--",
                        label=f"AP50 {name}")
        ax_map.legend()
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("step")
    ax_map.set_title("validation")
    figure.tight_layout()
    save_figure(figure, path)


# --------------------------------------------------------------------- training
def train_yolo(config, resume=False):
    """Train (or resume) a YOLO; evaluate the best checkpoint; write the results.

    Args:
        config (TrainConfig): the run.
        resume (bool): continue ``config.out/last.npz`` with its saved configuration
            (only ``progress`` comes from ``config``).
    Returns:
        dict: the contents of ``metrics.json``.
    Raises:
        nn.engine.TrainingInterrupted: Ctrl-C (``last.npz`` saved).
        nn.engine.ResumeError: ``resume`` without a ``last.npz`` of a YOLO run.
    """
    config.validate()
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(os.path.join(config.out, "last.npz"), KIND)
        config = replace(_config_from(checkpoint["config"]), progress=config.progress)
    elif config.quick:
        config = _quick(config)

    # Separate seeded streams: initialisation (nn's default generator, seeded in
    # build_model), augmentation (below) and shuffling (the loader's seed).
    augment_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    train_set, val_set = build_datasets(config, augment_rng)
    model = build_model(config)
    optimizer = nn.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = nn.optim.WarmupCosine(optimizer, config.warmup_steps, config.steps,
                                     final_factor=config.final_lr_factor,
                                     start_factor=1 / max(config.warmup_steps, 1))
    loader = nn.data.DataLoader(train_set, batch_size=min(config.batch_size, len(train_set)),
                                shuffle=True, drop_last=True, seed=config.seed,
                                collate_fn=collate_detection)

    def validation():
        metrics = evaluate(model, val_set, config.batch_size)["metrics"]
        return {"map": metrics["map"], "map_50": metrics["map_50"],
                "ap50_per_class": metrics["ap50_per_class"]}

    engine = Engine(
        config.out, KIND, model, optimizer, loss=lambda batch: model.loss(*batch),
        batches=loader, evaluate=validation, metric="map", mode="max", schedule=schedule,
        steps=config.steps, minutes=config.minutes, eval_at=config.eval_at,
        checkpoint_minutes=config.checkpoint_minutes, clip_grad=config.clip_grad or None,
        generators={"augment": augment_rng}, config=asdict(config),
        info={"model_config": asdict(model.config)}, quiet=not config.progress)
    summary = engine.fit(checkpoint)

    best, _ = load_run(engine.best_path)
    val = evaluate(best, val_set, config.batch_size)
    draw_detections(val_set, val["predictions"], os.path.join(config.out, "detections.png"))
    curves = val["curves"]
    defined = curves["ap"] >= 0
    figure = Figure(figsize=(5, 4))
    plot_pr_curves(np.broadcast_to(curves["recall"], curves["precision"].shape)[defined],
                   curves["precision"][defined],
                   names=[class_names(config)[k - 1] for k in curves["labels"][defined]],
                   ax=figure.subplots(), title="val precision-recall, IoU 0.5")
    save_figure(figure, os.path.join(config.out, "pr_curves.png"))
    plot_losses(engine.history, os.path.join(config.out, "loss_curves.png"))
    results = {
        "model_config": asdict(best.config),
        "parameters": int(sum(p.data.size for p in best.parameters())),
        "epochs": summary["steps"] * loader.batch_size / max(1, len(train_set)),
        "train_images": len(train_set),
        "val": _summary(val),
        "inference_ms_per_image": measure_inference(best, val_set),
    }
    test_path = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if not config.quick and os.path.isfile(test_path):
        test_set = VOCDataset(config.data, "test", classes=class_names(config),
                              transforms=val_set.dataset.transforms)
        if len(test_set):
            results["test"] = _summary(evaluate(best, test_set, config.batch_size))
    return engine.write_results(results)


def _summary(evaluation):
    metrics = dict(evaluation["metrics"])
    metrics["images"] = len(evaluation["targets"])
    metrics["seconds"] = evaluation["seconds"]
    return metrics


# --------------------------------------------------------------------------- CLI
def build_parser():
    """The command's flags: the engine's shared ones and the detector's own."""
    parser = argparse.ArgumentParser(
        prog="python -m detection.train_yolo",
        description="Train YOLO (v1) from scratch on a Pascal VOC dataset.")
    add_training_arguments(parser, minutes=TrainConfig.minutes, threads=1)
    parser.add_argument("--classes", nargs="+", default=None,
                        help="classes to detect (default: all but the background)")
    parser.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=positive_float, default=TrainConfig.lr)
    parser.add_argument("--stride", type=int, choices=(16, 32), default=None,
                        help="pixels per grid cell (default 16: S = 16 at 256 px)")
    parser.add_argument("--width", type=positive_float, default=None,
                        help="backbone width multiplier (default 1)")
    return parser


def config_from_args(args, **defaults):
    """The ``TrainConfig`` of parsed command-line ``args``; ``defaults`` fill other fields."""
    model = dict(defaults.pop("model", {}))
    if args.width is not None:
        model["width_multiplier"] = args.width
    if args.stride is not None:
        model["stride"] = args.stride
    classes = defaults.pop("classes", None) if args.classes is None else tuple(args.classes)
    return TrainConfig(data=args.data, out=args.out, minutes=args.minutes, steps=args.steps,
                       seed=args.seed, quick=args.quick, batch_size=args.batch_size, lr=args.lr,
                       classes=classes, progress=not args.quiet, model=model, **defaults)


def main(argv=None):
    parser = build_parser()
    args = parse_training_arguments(parser, argv, KIND)
    config = config_from_args(args)
    try:
        config.validate()
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    with command_errors(parser, argv):
        result = train_yolo(config, resume=args.resume)
    val = result["val"]
    print(f"val: COCO mAP {val['map']:.3f}, AP50 "
          + ", ".join(f"{k} {v:.3f}" for k, v in val["ap50_per_class"].items())
          + f"; {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; "
          f"inference {result['inference_ms_per_image']:.0f} ms/image; "
          f"written to {os.path.join(result['config']['out'], 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
