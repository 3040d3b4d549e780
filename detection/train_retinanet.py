"""Train RetinaNet from scratch on a Pascal VOC dataset.

A one-stage detector (``detection.retinanet``, Lin et al., "Focal Loss for Dense
Object Detection", ICCV 2017) trained from random weights on a laptop CPU in a fixed
wall-clock budget. Command::

    python -m detection.train_retinanet --data DIR --out RUN_DIR [--classes car plate]
        [--minutes 15 | --steps N] [--backbone small|resnet18] [--width W] [--seed 0]
        [--threads 1] [--resume] [--quick] [--quiet]

``DIR`` is a Pascal VOC dataset (``detection.datasets.voc``); ``--classes`` picks the
classes to detect (default: every class of the dataset but the background). The
license-plate lab trains its detector with this module through ``plates.train_detector``,
which adds the plate scenes' anchor settings.

This page says what is trained; the loop, the time budget, the checkpoints, ``--resume``
and Ctrl-C are the engine's (``nn.engine``). ``RUN_DIR`` receives:

- ``last.npz``: model, optimizer, schedule, data position, random states, history and
  config, saved atomically every few minutes, at each evaluation and on Ctrl-C
  (``--resume`` continues from it exactly: a resumed run equals an uninterrupted one);
- ``best.npz``: the same, for the evaluation with the highest val COCO mAP;
- ``history.json``, ``loss_curves.png``: losses per step, val mAP per evaluation;
- ``metrics.json``: the best checkpoint on the val (and test) split: COCO mAP and
  the 12 COCO numbers, AP per class, AP50 per class, inference time per image;
- ``detections.png``, ``pr_curves.png``: drawn detections and precision-recall curves.

Augmentation: random rescaling, a random crop and colour jitter. No horizontal flip:
it mirrors text (plates, signs).

Schedule: AdamW, linear warm-up from ``lr / warmup_steps``, then a cosine decay to
``final_lr_factor · lr`` at the last step (``nn.optim.WarmupCosine``). With ``--steps``
the run has that many steps (reproducible); with a time budget the total is fitted to
it from the speed of the warm-up steps and refitted at each evaluation, so the decay
ends when the budget does whatever the load of the machine. The val split is evaluated
at ``eval_at`` fractions of the run (evaluations count as training time).
"""
import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from matplotlib.figure import Figure

import nn
from nn.engine import (Engine, ResumeError, add_training_arguments, command_errors,
                       load_checkpoint, parse_training_arguments, positive_float, positive_int)
from detection.datasets.collate import collate_detection
from detection.datasets.transforms import (ColorJitter, Compose, Normalize, RandomCrop,
                                           RandomScale, Resize)
from detection.datasets.voc import VOCDataset, read_class_names
from detection.metrics import mean_average_precision, precision_recall_curve
from detection.retinanet import RetinaNet, RetinaNetConfig
from detection.visualize import draw_boxes, plot_pr_curves, save_figure, show_image

__all__ = ["KIND", "TrainConfig", "retinanet_config", "class_names", "build_model", "evaluate",
           "measure_inference", "load_run", "train_retinanet", "build_parser",
           "config_from_args", "run_and_report", "main"]

KIND = "retinanet"  # the trainer's name in its checkpoints
# ImageNet statistics: the generated scenes are natural-looking RGB, any fixed
# normalization to roughly zero mean and unit variance serves.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def retinanet_config(num_classes, backbone="small", quick=False, **overrides):
    """The RetinaNet configuration of a training run.

    Args:
        num_classes (int): K, the classes detected.
        backbone (str): ``"small"`` or ``"resnet18"``.
        quick (bool): a tiny network for smoke tests (8-16 channels).
        **overrides: any ``RetinaNetConfig`` field (pyramid levels, anchor sizes...).
    Returns:
        RetinaNetConfig
    """
    settings = dict(num_classes=num_classes, backbone=backbone, fpn_channels=64, head_convs=2)
    if backbone == "resnet18":
        settings["width_multiplier"] = 0.5
    if quick:
        settings.update(fpn_channels=16, head_convs=1, width_multiplier=0.5)
    settings.update(overrides)
    return RetinaNetConfig(**settings).validate()



@dataclass
class TrainConfig:
    """Everything a run depends on (saved in every checkpoint).

    Attributes:
        data (str): dataset root (Pascal VOC layout).
        classes (tuple[str] | None): the classes to detect, labelled 1..K in this order;
            None takes every class of the dataset's ``labels.txt`` but the first
            (background).
        out (str): run directory.
        minutes (float or None): wall-clock budget of training (evaluations included).
        steps (int or None): a fixed number of steps (reproducible schedule); with
            ``minutes`` too, the budget still stops the run if reached first. At least
            one of the two is needed.
        backbone (str): ``"small"`` or ``"resnet18"``.
        seed (int): seeds initialisation, shuffling and augmentation.
        quick (bool): a seconds-long smoke run (tiny model, few images and steps).
        image_size (int): the training resolution (images are resized to a square).
        batch_size (int), lr (float), weight_decay (float): AdamW.
        warmup_steps (int): linear warm-up length.
        final_lr_factor (float): lr at the end of the cosine, relative to ``lr``.
        clip_grad (float): gradient norm clip (0 = off).
        min_scale, max_scale (float): random rescaling before the random crop.
        jitter (float): colour jitter strength (brightness, contrast, saturation).
        eval_at (tuple of float): fractions of the run at which the val split is evaluated.
        checkpoint_minutes (float): save ``last.npz`` at least this often.
        max_train_images, max_val_images (int or None): use only the first images.
        model (dict): ``RetinaNetConfig`` overrides.
        progress (bool): show a progress bar.
    """

    data: str = "data/plates"
    out: str = "runs/retinanet"
    classes: tuple = None
    minutes: float = 15.0
    steps: int = None
    backbone: str = "small"
    seed: int = 0
    quick: bool = False
    image_size: int = 256
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
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
        if self.backbone not in ("small", "resnet18"):
            raise ValueError(f"backbone must be 'small' or 'resnet18', got {self.backbone!r}")
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
            raise TypeError(f"model must be a dict of RetinaNetConfig overrides, got "
                            f"{type(self.model).__name__}")
        unknown = set(self.model) - {f.name for f in fields(RetinaNetConfig)}
        if unknown:
            raise ValueError(f"model has unknown RetinaNetConfig fields {sorted(unknown)}")
        return self


# ------------------------------------------------------------------------- data
def class_names(config):
    """The detected classes of a run: ``config.classes`` or the dataset's foreground names."""
    if config.classes is not None:
        return tuple(config.classes)
    return tuple(read_class_names(config.data)[1:])


def _first(dataset, count):
    """The first ``count`` items of ``dataset`` (all of them when ``count`` is None)."""
    count = len(dataset) if count is None else min(count, len(dataset))
    return nn.data.Subset(dataset, range(count))


def build_datasets(config, augment_rng):
    """Train (augmented) and val (resized, normalized) datasets of the classes car, plate."""
    size = (config.image_size, config.image_size)
    normalize = Normalize(MEAN, STD)
    train_transforms = Compose([
        Resize(size),
        RandomScale(config.min_scale, config.max_scale, generator=augment_rng),
        # Pads a shrunk image at the bottom/right; drops objects mostly cut away.
        RandomCrop(size, min_visible=0.5, generator=augment_rng),
        ColorJitter(config.jitter, config.jitter, config.jitter, 0.02, generator=augment_rng),
        normalize,
    ])
    eval_transforms = Compose([Resize(size), normalize])
    classes = class_names(config)
    train = VOCDataset(config.data, "train", classes=classes, transforms=train_transforms)
    val = VOCDataset(config.data, "val", classes=classes, transforms=eval_transforms)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"dataset {config.data} needs train and val images, got "
                         f"{len(train)} and {len(val)}")
    return _first(train, config.max_train_images), _first(val, config.max_val_images)


def _model_config(config):
    return retinanet_config(len(class_names(config)), config.backbone, quick=config.quick,
                            **config.model)


def build_model(config):
    """A freshly initialised RetinaNet for ``config`` (seeded by ``config.seed``)."""
    nn.manual_seed(config.seed)
    return RetinaNet(_model_config(config))


# ------------------------------------------------------------------- evaluation
def _batches(dataset, batch_size):
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield collate_detection(samples)


def _label_names(dataset):
    """``label -> name`` of a VOCDataset (or a Subset of one)."""
    while not hasattr(dataset, "label_names"):
        dataset = dataset.dataset
    return dict(enumerate(dataset.label_names))


def evaluate(model, dataset, batch_size=8):
    """COCO evaluation of ``model`` on ``dataset`` (a ``VOCDataset`` or a Subset of one).

    Returns:
        dict: ``metrics`` (``mean_average_precision``'s dict plus ``ap50_per_class``,
        both keyed by class name), ``predictions`` and ``targets`` (lists of dicts),
        ``seconds``.
    """
    start = time.perf_counter()
    predictions, targets = [], []
    for images, batch_targets in _batches(dataset, batch_size):
        predictions += model.predict(images)
        targets += [{"boxes": t["boxes"], "labels": t["labels"]} for t in batch_targets]
    metrics = mean_average_precision(predictions, targets)
    curves = precision_recall_curve(predictions, targets, iou_threshold=0.5)
    names = _label_names(dataset)
    metrics["map_per_class"] = {names.get(k, str(k)): v
                                for k, v in metrics["map_per_class"].items()}
    metrics["ap50_per_class"] = {names.get(int(k), str(k)): float(ap)
                                 for k, ap in zip(curves["labels"], curves["ap"])}
    return {"metrics": metrics, "predictions": predictions, "targets": targets,
            "curves": curves, "seconds": time.perf_counter() - start}


def measure_inference(model, dataset, count=20, warmup=3):
    """Median milliseconds of ``model.predict`` on one image (batch 1), postprocessing included."""
    images = [dataset[i % len(dataset)][0][None] for i in range(count + warmup)]  # (1, H, W, 3)
    times = []
    for i, image in enumerate(images):
        start = time.perf_counter()
        model.predict(image)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


# ---------------------------------------------------------------------- figures
def plot_losses(history, path):
    """Loss curves (per step, smoothed) and val mAP at each evaluation.

    Args:
        history (dict): the engine's: ``losses`` (name -> per-step values) and
            ``evaluations`` (dicts with ``step``, ``map``, ``ap50_per_class``).
    """
    figure = Figure(figsize=(10, 4))
    ax_loss, ax_map = figure.subplots(1, 2)
    for key, label in (("loss", "total"), ("classification", "focal (classification)"),
                       ("box_regression", "box regression")):
        values = np.asarray(history["losses"].get(key, []), dtype=np.float64)
        if values.size == 0:
            continue
        steps = np.arange(1, values.size + 1)
        window = max(1, min(50, values.size // 10))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")  # moving mean
        ax_loss.plot(steps[window - 1:], smooth, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (moving mean)")
    ax_loss.legend()
    ax_loss.set_title("training losses")
    evals = history["evaluations"]
    if evals:
        x = [e["step"] for e in evals]
        ax_map.plot(x, [e["map"] for e in evals], "o-", label="COCO mAP")
        for name in evals[-1]["ap50_per_class"]:
            ax_map.plot(x, [e["ap50_per_class"].get(name, float("nan")) for e in evals], "s--",
                        label=f"AP50 {name}")
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("step")
    ax_map.set_title("validation")
    ax_map.legend()
    figure.tight_layout()
    save_figure(figure, path)


def draw_detections(dataset, predictions, path, count=8, score_threshold=0.4):
    """A grid of val images with their detections (score >= threshold) drawn."""
    count = min(count, len(dataset))
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for ax in axes[count:]:
        ax.set_axis_off()
    names = _label_names(dataset)
    for i, ax in zip(range(count), axes):
        image = dataset[i][0] * np.asarray(STD, np.float32) + np.asarray(MEAN, np.float32)
        show_image(ax, np.clip(image, 0, 1))
        det = predictions[i]
        draw_boxes(ax, det["boxes"], det["labels"], det["scores"], class_names=names,
                   score_threshold=score_threshold, linewidth=1.5, fontsize=6)
    figure.tight_layout()
    save_figure(figure, path)



def _load_average():
    """The 1-minute load average (None where the OS has none): other jobs slow a run down."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------- checkpoints
def _config_from(saved):
    """The ``TrainConfig`` saved in a checkpoint (a ResumeError if it is not one)."""
    try:
        values = dict(saved)
        values["eval_at"] = tuple(values["eval_at"])
        return TrainConfig(**values).validate()
    except (KeyError, TypeError, ValueError) as error:
        raise ResumeError(f"the checkpoint's configuration is not a RetinaNet run's: "
                          f"{error}") from None


def load_run(path):
    """A run's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    model_config = RetinaNetConfig(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in checkpoint["info"]["model_config"].items()})
    model = RetinaNet(model_config)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


# --------------------------------------------------------------------- training
def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return replace(config, steps=config.steps or 6, warmup_steps=min(config.warmup_steps, 2),
                   eval_at=(1.0,), batch_size=min(config.batch_size, 4),
                   max_train_images=min(config.max_train_images or 16, 16),
                   max_val_images=min(config.max_val_images or 8, 8))


def train_retinanet(config, resume=False):
    """Train (or resume) a RetinaNet; evaluate the best checkpoint; write the results.

    Args:
        config (TrainConfig): the run.
        resume (bool): continue ``config.out/last.npz``; the saved configuration is
            used (only ``progress`` comes from ``config``).
    Returns:
        dict: the contents of ``metrics.json`` (the engine's summary, val/test metrics of
        the best checkpoint, inference ms per image).
    Raises:
        nn.engine.TrainingInterrupted: Ctrl-C (``last.npz`` saved).
        nn.engine.ResumeError: ``resume`` without a ``last.npz`` of a RetinaNet run.
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
                "ap50_per_class": metrics["ap50_per_class"], "load_average": _load_average()}

    engine = Engine(
        config.out, KIND, model, optimizer, loss=lambda batch: model.loss(*batch),
        batches=loader, evaluate=validation, metric="map", mode="max", schedule=schedule,
        steps=config.steps, minutes=config.minutes, eval_at=config.eval_at,
        checkpoint_minutes=config.checkpoint_minutes, clip_grad=config.clip_grad or None,
        generators={"augment": augment_rng}, config=asdict(config),
        info={"model_config": asdict(model.config)}, quiet=not config.progress)
    summary = engine.fit(checkpoint)
    return _finish(engine, config, summary, val_set, train_set)


def _finish(engine, config, summary, val_set, train_set):
    """Evaluate the best checkpoint on val (and test), draw, time inference, write JSON."""
    model, _ = load_run(engine.best_path)
    val = evaluate(model, val_set, config.batch_size)
    draw_detections(val_set, val["predictions"], os.path.join(config.out, "detections.png"))
    curves = val["curves"]
    defined = curves["ap"] >= 0
    figure = Figure(figsize=(5, 4))
    plot_pr_curves(np.broadcast_to(curves["recall"], curves["precision"].shape)[defined],
                   curves["precision"][defined],
                   names=[class_names(config)[k - 1] for k in curves["labels"][defined]],
                   ax=figure.subplots(),
                   title="val precision-recall, IoU 0.5")
    save_figure(figure, os.path.join(config.out, "pr_curves.png"))
    plot_losses(engine.history, os.path.join(config.out, "loss_curves.png"))
    results = {
        "model_config": asdict(model.config),
        "parameters": int(sum(p.data.size for p in model.parameters())),
        "epochs": summary["steps"] * engine.batches.batch_size / max(1, len(train_set)),
        "train_images": len(train_set),
        "val": _summary(val),
        "inference_ms_per_image": measure_inference(model, val_set),
    }
    test_path = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if not config.quick and os.path.isfile(test_path):
        test_set = VOCDataset(config.data, "test", classes=class_names(config),
                              transforms=val_set.dataset.transforms)
        if len(test_set):
            results["test"] = _summary(evaluate(model, test_set, config.batch_size))
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
        prog="python -m detection.train_retinanet",
        description="Train RetinaNet from scratch on a Pascal VOC dataset.")
    # On a machine shared with other jobs one thread was 2-5x faster than two: the
    # threads of every GEMM wait for each other.
    add_training_arguments(parser, minutes=TrainConfig.minutes, threads=1)
    parser.add_argument("--classes", nargs="+", default=None,
                        help="classes to detect (default: all but the background)")
    parser.add_argument("--backbone", choices=("small", "resnet18"), default="small")
    parser.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=positive_float, default=TrainConfig.lr)
    parser.add_argument("--width", type=positive_float, default=None,
                        help="backbone width multiplier (default: 1 for small, 0.5 for resnet18)")
    return parser


def config_from_args(args, **defaults):
    """The ``TrainConfig`` of parsed command-line ``args``; ``defaults`` fill other fields
    (``model`` defaults are laid under ``--width``)."""
    model = dict(defaults.pop("model", {}))
    if args.width is not None:
        model["width_multiplier"] = args.width
    classes = defaults.pop("classes", None) if args.classes is None else tuple(args.classes)
    return TrainConfig(data=args.data, out=args.out, minutes=args.minutes, steps=args.steps,
                       backbone=args.backbone, seed=args.seed, quick=args.quick,
                       batch_size=args.batch_size, lr=args.lr, classes=classes,
                       progress=not args.quiet, model=model, **defaults)


def run_and_report(parser, config, resume, argv=None):
    """Validate ``config`` (a bad value is a usage error), train, print the summary.

    Ctrl-C saves ``last.npz``, prints the command that continues the run and exits
    with status 130 (``nn.engine.command_errors``).
    """
    try:
        config.validate()
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    with command_errors(parser, argv, config.out):
        result = train_retinanet(config, resume=resume)
    val = result["val"]
    print(f"val: COCO mAP {val['map']:.3f}, AP50 "
          + ", ".join(f"{k} {v:.3f}" for k, v in val["ap50_per_class"].items())
          + f"; {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; "
          f"inference {result['inference_ms_per_image']:.0f} ms/image; "
          f"written to {os.path.join(result['config']['out'], 'metrics.json')}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parse_training_arguments(parser, argv, KIND)
    return run_and_report(parser, config_from_args(args), args.resume, argv)


if __name__ == "__main__":
    sys.exit(main())
