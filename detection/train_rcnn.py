"""Train the R-CNN family from scratch on a Pascal VOC dataset: Faster, Fast and Mask R-CNN.

Command::

    python -m detection.train_rcnn --model faster_rcnn|fast_rcnn|mask_rcnn --data DIR --out RUN_DIR
        [--classes car plate] [--minutes 15 | --steps N] [--backbone small|resnet18]
        [--batch-size 4] [--lr 2e-3] [--pooler pool|align] [--proposals fast|quality]
        [--workers 1] [--max-train-images N] [--max-val-images N] [--seed 0] [--threads 1]
        [--resume] [--quick] [--quiet]

- ``faster_rcnn`` (``detection.faster_rcnn.FasterRCNN``): RPN and Fast R-CNN head on a
  shared map, trained jointly (approximate joint training);
- ``fast_rcnn`` (``detection.faster_rcnn.FastRCNN``): the head on selective-search
  proposals (``detection.selective_search``), computed once per image at the training
  resolution before training (``--workers`` processes) and kept in
  ``RUN_DIR/proposals_<split>.npz`` (their time is reported apart from the training
  time; about a second per 256-px image on one core). Without geometric augmentation:
  the proposals belong to the unaugmented image;
- ``mask_rcnn`` (``detection.mask_rcnn.MaskRCNN``): Faster R-CNN with RoIAlign and a
  mask head; the dataset's ``SegmentationObject`` masks are its targets, and the
  evaluation adds COCO mask mAP (``iou_type="segm"``).

``DIR`` is a Pascal VOC dataset (``detection.datasets.voc``); ``--classes`` picks the
classes (default: every class of the dataset but the background). The loop, the time
budget, the checkpoints, ``--resume`` and Ctrl-C are the engine's (``nn.engine``).
``RUN_DIR`` receives ``last.npz``, ``best.npz`` (highest val COCO box mAP; mask mAP for
Mask R-CNN), ``history.json``, ``metrics.json`` (val and test metrics of the best
checkpoint, inference time per image), ``loss_curves.png``, ``detections.png``,
``pr_curves.png``.

The models' defaults are the papers'; the runs change one: background RoIs are
sampled from IoU 0 up (``box_bg_iou_low=0.0``, torchvision's choice) instead of the
paper's 0.1, which never shows the head a proposal far from every object (see
``model_config``).

Augmentation (Faster and Mask R-CNN): random rescaling, a random crop and colour
jitter, no horizontal flip (it mirrors text). Schedule: AdamW, linear warm-up, cosine
decay to ``final_lr_factor · lr`` fitted to the budget (``nn.optim.WarmupCosine``).
Batches of 4 images (the paper used 2) of 64 sampled RoIs each.

For the plate scenes (``python -m plates.synthetic plates --out DIR --num-images 2000``)
pass ``--classes car plate``: their ``labels.txt`` also names the characters.
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
from detection.faster_rcnn import FasterRCNN, FasterRCNNConfig, FastRCNN
from detection.mask_rcnn import MaskRCNN, MaskRCNNConfig
from detection.metrics import mean_average_precision, precision_recall_curve
from detection.train_rcnn_svm import compute_proposals
from detection.visualize import draw_boxes, draw_masks, plot_pr_curves, save_figure, show_image

__all__ = ["DETECTORS", "TrainConfig", "MasksAsTargets", "model_config", "class_names",
           "build_model", "evaluate", "load_run", "train_rcnn", "build_parser", "main"]

DETECTORS = ("faster_rcnn", "fast_rcnn", "mask_rcnn")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LOSS_NAMES = ("rpn_objectness", "rpn_box_regression", "classification", "box_regression",
              "mask")


def _model_classes(detector):
    """``(model class, config class)`` of a detector name."""
    if detector == "mask_rcnn":
        return MaskRCNN, MaskRCNNConfig
    return (FasterRCNN if detector == "faster_rcnn" else FastRCNN), FasterRCNNConfig


def model_config(detector, num_classes, backbone="small", quick=False, **overrides):
    """The model configuration of a run.

    Args:
        detector (str): one of ``DETECTORS``.
        num_classes (int): foreground classes (the background is added).
        backbone (str): ``"small"`` or ``"resnet18"``.
        quick (bool): a tiny network for smoke tests.
        **overrides: any field of the configuration class.
    Returns:
        FasterRCNNConfig or MaskRCNNConfig
    """
    _, config_class = _model_classes(detector)
    # Background RoIs from IoU 0 (torchvision's) rather than the paper's 0.1: on the
    # plate scenes, 150 steps of batch 4, seeds 0 and 1, plate AP50 0.138 / 0.112
    # against 0.073 / 0.058 (box mAP 0.126 / 0.136 against 0.125 / 0.124).
    settings = dict(num_classes=num_classes + 1, backbone=backbone, box_bg_iou_low=0.0)
    if backbone == "resnet18":
        settings["width_multiplier"] = 0.5
    if detector == "mask_rcnn":
        settings["pooler"] = "align"
    if quick:
        settings.update(width_multiplier=0.5, feature_channels=16, representation_size=32)
    settings.update(overrides)
    return config_class(**settings).validate()


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in every checkpoint).

    Attributes:
        detector (str): ``"faster_rcnn"``, ``"fast_rcnn"`` or ``"mask_rcnn"``.
        data (str): dataset root (Pascal VOC layout).
        out (str): run directory.
        classes (tuple[str] | None): the classes, labelled 1..K in this order; None
            takes every class of the dataset's ``labels.txt`` but the background.
        minutes (float or None), steps (int or None): the budget (at least one).
        backbone (str): ``"small"`` or ``"resnet18"``.
        seed (int): seeds initialisation, shuffling, sampling and augmentation.
        quick (bool): a seconds-long smoke run (tiny model, few images and steps).
        image_size (int): training resolution (images resized to a square).
        batch_size (int), lr (float), weight_decay (float): AdamW.
        warmup_steps (int), final_lr_factor (float): the schedule.
        clip_grad (float): gradient norm clip (0 = off).
        min_scale, max_scale (float), jitter (float): augmentation.
        proposals (str): selective-search mode of Fast R-CNN (``"fast"`` or ``"quality"``).
        workers (int): processes computing the proposals.
        eval_at (tuple of float): fractions of the run at which val is evaluated.
        checkpoint_minutes (float): save ``last.npz`` at least this often.
        max_train_images, max_val_images (int or None): use only the first images.
        model (dict): overrides of the model configuration.
        progress (bool): show progress bars.
    """

    detector: str = "faster_rcnn"
    data: str = "data/plates"
    out: str = "runs/faster_rcnn"
    classes: tuple = None
    minutes: float = 15.0
    steps: int = None
    backbone: str = "small"
    seed: int = 0
    quick: bool = False
    image_size: int = 256
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    final_lr_factor: float = 0.02
    clip_grad: float = 10.0
    min_scale: float = 0.75
    max_scale: float = 1.25
    jitter: float = 0.2
    proposals: str = "fast"
    workers: int = 1
    eval_at: tuple = (0.5, 0.75, 1.0)
    checkpoint_minutes: float = 3.0
    max_train_images: int = None
    max_val_images: int = None
    model: dict = field(default_factory=dict)
    progress: bool = True

    def validate(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
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
        for name in ("batch_size", "image_size", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0):
            raise ValueError("need lr > 0, weight_decay >= 0 and warmup_steps >= 0, got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup_steps}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, "
                             f"{self.max_scale}")
        if self.proposals not in ("fast", "quality"):
            raise ValueError(f"proposals must be 'fast' or 'quality', got {self.proposals!r}")
        if not self.eval_at or any(not 0 < f <= 1 for f in self.eval_at) \
                or list(self.eval_at) != sorted(self.eval_at):
            raise ValueError(f"eval_at must be increasing fractions in (0, 1], got {self.eval_at}")
        if not isinstance(self.model, dict):
            raise TypeError(f"model must be a dict of configuration overrides, got "
                            f"{type(self.model).__name__}")
        _, config_class = _model_classes(self.detector)
        unknown = set(self.model) - {f.name for f in fields(config_class)}
        if unknown:
            raise ValueError(f"model has unknown {config_class.__name__} fields {sorted(unknown)}")
        return self


# ------------------------------------------------------------------------- data
def class_names(config):
    """The detected classes of a run: ``config.classes`` or the dataset's foreground names."""
    if config.classes is not None:
        return tuple(config.classes)
    return tuple(read_class_names(config.data)[1:])


class MasksAsTargets:
    """A dataset whose targets carry ``"masks"``, the ``(M, H, W)`` bool instance masks
    (a ``VOCDataset(..., return_instance_masks=True)`` renamed for Mask R-CNN)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, target = self.dataset[index]
        target = dict(target)
        target["masks"] = target.pop("instance_masks")
        return image, target


class _WithProposals:
    """Dataset items ``(image, proposals (P, 4) float32, target)``."""

    def __init__(self, dataset, proposals):
        self.dataset, self.proposals = dataset, proposals

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, target = self.dataset[index]
        return image, self.proposals[index], target


def _collate(samples):
    """Batches of ``(images, targets)`` or ``(images, proposals, targets)``."""
    if len(samples[0]) == 2:
        return collate_detection(samples)
    images, targets = collate_detection([(s[0], s[2]) for s in samples])
    return images, [s[1] for s in samples], targets


def _first(dataset, count):
    count = len(dataset) if count is None else min(count, len(dataset))
    return nn.data.Subset(dataset, range(count))


def split_proposals(dataset, path, config):
    """Selective-search proposals of the images of ``dataset`` (uint8, training size).

    ``detection.train_rcnn_svm.compute_proposals`` computes them (``config.workers``
    processes) and keeps them in ``path``, keyed by each image's checksum and the mode:
    a later run, ``--resume`` or a run interrupted while searching reuses them.

    Returns:
        tuple: list of ndarray[P_i, 4] float32, and the seconds spent (0 when cached).
    """
    images = np.stack([dataset[i][0] for i in range(len(dataset))])     # (N, H, W, 3) uint8
    return compute_proposals(images, path, config.proposals, config.workers, config.progress)


def build_datasets(config, augment_rng):
    """Train and val datasets of the run's detector (module docstring)."""
    size = (config.image_size, config.image_size)
    normalize = Normalize(MEAN, STD)
    jitter = ColorJitter(config.jitter, config.jitter, config.jitter, 0.02, generator=augment_rng)
    classes = class_names(config)
    masks = config.detector == "mask_rcnn"
    if config.detector == "fast_rcnn":
        train_transforms = Compose([Resize(size), jitter, normalize])
    else:
        train_transforms = Compose([
            Resize(size),
            RandomScale(config.min_scale, config.max_scale, generator=augment_rng),
            RandomCrop(size, min_visible=0.5, generator=augment_rng),
            jitter, normalize])
    sets = []
    for split, transforms, limit in (("train", train_transforms, config.max_train_images),
                                     ("val", Compose([Resize(size), normalize]),
                                      config.max_val_images)):
        dataset = VOCDataset(config.data, split, classes=classes, transforms=transforms,
                             return_instance_masks=masks)
        if len(dataset) == 0:
            raise ValueError(f"dataset {config.data} has no {split} images")
        dataset = _first(dataset, limit)
        if masks:
            dataset = MasksAsTargets(dataset)
        if config.detector == "fast_rcnn":
            raw = _first(VOCDataset(config.data, split, classes=classes,
                                    transforms=Resize(size)), limit)
            path = os.path.join(config.out, f"proposals_{split}.npz")
            proposals, seconds = split_proposals(raw, path, config)
            dataset = _WithProposals(dataset, proposals)
            dataset.seconds = seconds
        sets.append(dataset)
    return sets


def build_model(config):
    """A freshly initialised model for ``config`` (seeded by ``config.seed``)."""
    nn.manual_seed(config.seed)
    model_class, _ = _model_classes(config.detector)
    return model_class(model_config(config.detector, len(class_names(config)), config.backbone,
                                    quick=config.quick, **config.model))


# ------------------------------------------------------------------- evaluation
def _label_names(dataset):
    while not hasattr(dataset, "label_names"):
        dataset = dataset.dataset
    return dict(enumerate(dataset.label_names))


def _predict(model, batch):
    if len(batch) == 3:
        return model.predict(batch[0], batch[1])
    return model.predict(batch[0])


def evaluate(model, dataset, batch_size=4):
    """COCO evaluation of ``model`` on ``dataset`` (box mAP; mask mAP too with masks).

    Returns:
        dict: ``metrics`` (``mean_average_precision``'s dict plus ``ap50_per_class``,
        keyed by class name; ``segm`` for Mask R-CNN), ``predictions``, ``targets``,
        ``curves``, ``seconds``.
    """
    start = time.perf_counter()
    predictions, targets = [], []
    for first in range(0, len(dataset), batch_size):
        batch = _collate([dataset[i] for i in range(first, min(first + batch_size,
                                                                len(dataset)))])
        predictions += _predict(model, batch)
        targets += [{k: t[k] for k in ("boxes", "labels", "masks") if k in t}
                    for t in batch[-1]]
    metrics = mean_average_precision(predictions, targets)
    curves = precision_recall_curve(predictions, targets, iou_threshold=0.5)
    names = _label_names(dataset)
    metrics["map_per_class"] = {names.get(k, str(k)): v
                                for k, v in metrics["map_per_class"].items()}
    metrics["ap50_per_class"] = {names.get(int(k), str(k)): float(ap)
                                 for k, ap in zip(curves["labels"], curves["ap"])}
    if targets and "masks" in targets[0]:
        segm = mean_average_precision(predictions, targets, iou_type="segm")
        segm["map_per_class"] = {names.get(k, str(k)): v
                                 for k, v in segm["map_per_class"].items()}
        metrics["segm"] = segm
    return {"metrics": metrics, "predictions": predictions, "targets": targets,
            "curves": curves, "seconds": time.perf_counter() - start}


def measure_inference(model, dataset, count=20, warmup=3):
    """Median milliseconds of ``predict`` on one image (batch 1), postprocessing included."""
    times = []
    for i in range(count + warmup):
        batch = _collate([dataset[i % len(dataset)]])
        start = time.perf_counter()
        _predict(model, batch)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


# ---------------------------------------------------------------------- figures
def plot_losses(history, path):
    """Every loss term per step (moving mean) and the val mAP at each evaluation."""
    figure = Figure(figsize=(10, 4))
    ax_loss, ax_map = figure.subplots(1, 2)
    for key in ("loss",) + LOSS_NAMES:
        values = np.asarray(history["losses"].get(key, []), dtype=np.float64)
        if values.size == 0:
            continue
        steps = np.arange(1, values.size + 1)
        window = max(1, min(50, values.size // 10))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1:], smooth, label=key.replace("_", " "))
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (moving mean)")
    ax_loss.legend(fontsize=7)
    ax_loss.set_title("training losses")
    evals = history["evaluations"]
    if evals:
        x = [e["step"] for e in evals]
        ax_map.plot(x, [e["map"] for e in evals], "o-", label="box mAP")
        if "segm_map" in evals[-1]:
            ax_map.plot(x, [e["segm_map"] for e in evals], "o-", label="mask mAP")
        for name in evals[-1]["ap50_per_class"]:
            ax_map.plot(x, [e["ap50_per_class"].get(name, float("nan")) for e in evals], "s--",
                        label=f"box AP50 {name}")
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("step")
    ax_map.set_title("validation")
    ax_map.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def draw_detections(dataset, predictions, path, count=8, score_threshold=0.5):
    """A grid of val images with their detections (and masks) drawn."""
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
        shown = det["scores"] >= score_threshold
        if "masks" in det and shown.any():
            draw_masks(ax, det["masks"][shown], det["labels"][shown])
        draw_boxes(ax, det["boxes"], det["labels"], det["scores"], class_names=names,
                   score_threshold=score_threshold, linewidth=1.5, fontsize=6)
    figure.tight_layout()
    save_figure(figure, path)


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------- checkpoints
def _config_from(saved):
    try:
        values = dict(saved)
        values["eval_at"] = tuple(values["eval_at"])
        if values.get("classes") is not None:
            values["classes"] = tuple(values["classes"])
        return TrainConfig(**values).validate()
    except (KeyError, TypeError, ValueError) as error:
        raise ResumeError(f"the checkpoint's configuration is not an R-CNN run's: "
                          f"{error}") from None


def load_run(path):
    """A run's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    detector = checkpoint["config"]["detector"]
    model_class, config_class = _model_classes(detector)
    saved = checkpoint["info"]["model_config"]
    model = model_class(config_class(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in saved.items()}))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


# --------------------------------------------------------------------- training
def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return replace(config, steps=config.steps or 6, warmup_steps=min(config.warmup_steps, 2),
                   eval_at=(1.0,), batch_size=min(config.batch_size, 2),
                   max_train_images=min(config.max_train_images or 8, 8),
                   max_val_images=min(config.max_val_images or 4, 4))


def train_rcnn(config, resume=False):
    """Train (or resume) a detector of the R-CNN family; evaluate its best checkpoint.

    Args:
        config (TrainConfig): the run.
        resume (bool): continue ``config.out/last.npz`` with its saved configuration
            (only ``progress`` comes from ``config``).
    Returns:
        dict: the contents of ``metrics.json``.
    Raises:
        nn.engine.TrainingInterrupted: Ctrl-C (``last.npz`` saved).
        nn.engine.ResumeError: ``resume`` without a ``last.npz`` of such a run.
    """
    config.validate()
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(os.path.join(config.out, "last.npz"), config.detector)
        config = replace(_config_from(checkpoint["config"]), progress=config.progress)
    elif config.quick:
        config = _quick(config)
    os.makedirs(config.out, exist_ok=True)
    augment_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    train_set, val_set = build_datasets(config, augment_rng)
    model = build_model(config)
    optimizer = nn.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = nn.optim.WarmupCosine(optimizer, config.warmup_steps, config.steps,
                                     final_factor=config.final_lr_factor,
                                     start_factor=1 / max(config.warmup_steps, 1))
    loader = nn.data.DataLoader(train_set, batch_size=min(config.batch_size, len(train_set)),
                                shuffle=True, drop_last=True, seed=config.seed,
                                collate_fn=_collate)
    with_masks = config.detector == "mask_rcnn"

    def validation():
        metrics = evaluate(model, val_set, config.batch_size)["metrics"]
        record = {"map": metrics["map"], "map_50": metrics["map_50"],
                  "ap50_per_class": metrics["ap50_per_class"], "load_average": _load_average()}
        if with_masks:
            record["segm_map"] = metrics["segm"]["map"]
        return record

    def loss(batch):
        losses = model.loss(*batch)
        return {k: v for k, v in losses.items() if k == "loss" or k in LOSS_NAMES
                or k.startswith("num_") or k.startswith("rpn_num")}

    engine = Engine(
        config.out, config.detector, model, optimizer, loss=loss, batches=loader,
        evaluate=validation, metric="segm_map" if with_masks else "map", mode="max",
        schedule=schedule, steps=config.steps, minutes=config.minutes, eval_at=config.eval_at,
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
    names = class_names(config)
    figure = Figure(figsize=(5, 4))
    plot_pr_curves(np.broadcast_to(curves["recall"], curves["precision"].shape)[defined],
                   curves["precision"][defined],
                   names=[names[k - 1] for k in curves["labels"][defined]], ax=figure.subplots(),
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
    if config.detector == "fast_rcnn":
        results["proposal_seconds"] = {"train": train_set.seconds, "val": val_set.seconds}
    test_path = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if not config.quick and os.path.isfile(test_path):
        test_config = replace(config, max_val_images=None)
        test = _test_set(test_config)
        if len(test):
            results["test"] = _summary(evaluate(model, test, config.batch_size))
    return engine.write_results(results)


def _test_set(config):
    size = (config.image_size, config.image_size)
    classes = class_names(config)
    masks = config.detector == "mask_rcnn"
    dataset = VOCDataset(config.data, "test", classes=classes,
                         transforms=Compose([Resize(size), Normalize(MEAN, STD)]),
                         return_instance_masks=masks)
    if masks:
        return MasksAsTargets(dataset)
    if config.detector == "fast_rcnn":
        raw = VOCDataset(config.data, "test", classes=classes, transforms=Resize(size))
        proposals, _ = split_proposals(raw, os.path.join(config.out, "proposals_test.npz"),
                                       config)
        return _WithProposals(dataset, proposals)
    return dataset


def _summary(evaluation):
    metrics = dict(evaluation["metrics"])
    metrics["images"] = len(evaluation["targets"])
    metrics["seconds"] = evaluation["seconds"]
    return metrics


# --------------------------------------------------------------------------- CLI
def build_parser():
    """The command's flags: the engine's shared ones and the detectors' own."""
    parser = argparse.ArgumentParser(
        prog="python -m detection.train_rcnn",
        description="Train Faster R-CNN, Fast R-CNN or Mask R-CNN from scratch on a Pascal "
                    "VOC dataset.")
    add_training_arguments(parser, minutes=TrainConfig.minutes, threads=1)
    parser.add_argument("--model", choices=DETECTORS, default="faster_rcnn",
                        help="the detector (default faster_rcnn)")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="classes to detect (default: all but the background)")
    parser.add_argument("--backbone", choices=("small", "resnet18"), default="small")
    parser.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=positive_float, default=TrainConfig.lr)
    parser.add_argument("--pooler", choices=("pool", "align"), default=None,
                        help="RoIPool or RoIAlign (default: pool, align for mask_rcnn)")
    parser.add_argument("--proposals", choices=("fast", "quality"), default="fast",
                        help="selective-search mode of fast_rcnn (default fast)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="processes computing the proposals of fast_rcnn (default 1)")
    parser.add_argument("--max-train-images", type=positive_int, default=None,
                        help="use only the first N training images (selective search takes "
                             "about a second per 256-px image)")
    parser.add_argument("--max-val-images", type=positive_int, default=None,
                        help="use only the first N validation images")
    return parser


def config_from_args(args):
    """The ``TrainConfig`` of parsed command-line ``args``."""
    model = {} if args.pooler is None else {"pooler": args.pooler}
    return TrainConfig(detector=args.model, data=args.data, out=args.out, minutes=args.minutes,
                       steps=args.steps, backbone=args.backbone, seed=args.seed,
                       quick=args.quick, batch_size=args.batch_size, lr=args.lr,
                       classes=None if args.classes is None else tuple(args.classes),
                       proposals=args.proposals, progress=not args.quiet, model=model,
                       max_train_images=args.max_train_images, workers=args.workers,
                       max_val_images=args.max_val_images)


def main(argv=None):
    parser = build_parser()
    model = parser.parse_known_args(argv)[0].model
    args = parse_training_arguments(parser, argv, model)
    config = config_from_args(args)
    try:
        config.validate()
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    with command_errors(parser, argv):
        result = train_rcnn(config, resume=args.resume)
    val = result["val"]
    line = (f"val: COCO box mAP {val['map']:.3f}, AP50 "
            + ", ".join(f"{k} {v:.3f}" for k, v in val["ap50_per_class"].items()))
    if "segm" in val:
        line += f"; mask mAP {val['segm']['map']:.3f}"
    print(line + f"; {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; "
          f"inference {result['inference_ms_per_image']:.0f} ms/image; written to "
          f"{os.path.join(result['config']['out'], 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
