"""Train RetinaNet from scratch on a Pascal VOC dataset.

A one-stage detector (``detection.retinanet``, Lin et al., "Focal Loss for Dense
Object Detection", ICCV 2017) trained from random weights on a laptop CPU in a fixed
wall-clock budget. Command::

    python -m detection.train_retinanet --data DIR --out RUN_DIR [--classes car plate]
        [--minutes 15] [--backbone small|resnet18] [--width W] [--seed 0] [--threads 1]
        [--resume] [--quick]

``DIR`` is a Pascal VOC dataset (``detection.datasets.voc``); ``--classes`` picks the
classes to detect (default: every class of the dataset but the background). The
license-plate lab trains its detector with this module through ``plates.train_detector``,
which adds the plate scenes' anchor settings. ``RUN_DIR`` receives:

- ``last.npz``: model, optimizer, schedule, epoch/batch position, random states and
  config, saved atomically every few minutes and at each evaluation (``--resume``
  continues from it, exactly: a resumed run equals an uninterrupted one);
- ``best.npz``: the same, for the evaluation with the highest val COCO mAP;
- ``history.json``, ``loss_curves.png``: losses per iteration, val mAP per evaluation;
- ``metrics.json``: the best checkpoint on the val (and test) split: COCO mAP and
  the 12 COCO numbers, AP per class, AP50 per class, inference time per image;
- ``detections.png``, ``pr_curves.png``: drawn detections and precision-recall curves.

Augmentation: random rescaling, a random crop and colour jitter. No horizontal flip:
it mirrors text (plates, signs).

Schedule: AdamW, linear warm-up, then a cosine decay over the run's *progress*. With
``iters`` the progress is ``iteration / iters`` (reproducible); with a time budget it
is ``elapsed / budget``, so the decay ends when the budget does whatever the load of
the machine (evaluations and checkpoints count as elapsed time).
"""
import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

import nn
from nn.io import atomic_write_text
from detection.datasets.transforms import (ColorJitter, Compose, Normalize, RandomCrop,
                                           RandomScale, Resize)
from detection.datasets.voc import VOCDataset, read_class_names
from detection.metrics import mean_average_precision, precision_recall_curve
from detection.retinanet import RetinaNet, RetinaNetConfig
from detection.visualize import draw_boxes, plot_pr_curves, save_figure, show_image

__all__ = ["TrainConfig", "WarmupCosine", "retinanet_config", "class_names", "build_model",
           "evaluate", "measure_inference", "load_run", "train_retinanet", "main"]

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
        minutes (float): wall-clock budget of training (evaluations included).
        iters (int or None): a fixed number of iterations instead of the budget
            (reproducible schedule); the budget still stops the run if reached first.
        backbone (str): ``"small"`` or ``"resnet18"``.
        seed (int): seeds initialisation, shuffling and augmentation.
        quick (bool): a seconds-long smoke run (tiny model, few images and iterations).
        image_size (int): the training resolution (images are resized to a square).
        batch_size (int), lr (float), weight_decay (float): AdamW.
        warmup_iters (int): linear warm-up length.
        final_lr_factor (float): lr at the end of the cosine, relative to ``lr``.
        clip_grad (float): gradient norm clip (0 = off).
        min_scale, max_scale (float): random rescaling before the random crop.
        jitter (float): colour jitter strength (brightness, contrast, saturation).
        eval_at (tuple of float): progress fractions at which the val split is evaluated.
        checkpoint_minutes (float): save ``last.npz`` at least this often.
        max_train_images, max_val_images (int or None): use only the first images.
        model (dict): ``RetinaNetConfig`` overrides.
        stop_after (int or None): end this session after that many iterations, as an
            interruption would (to test ``--resume``); the schedule is unaffected.
        progress (bool): show a tqdm bar.
    """

    data: str = "data/plates"
    out: str = "runs/retinanet"
    classes: tuple = None
    minutes: float = 15.0
    iters: int = None
    backbone: str = "small"
    seed: int = 0
    quick: bool = False
    image_size: int = 256
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 100
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
    stop_after: int = None
    progress: bool = True

    def validate(self):
        if self.backbone not in ("small", "resnet18"):
            raise ValueError(f"backbone must be 'small' or 'resnet18', got {self.backbone!r}")
        if not self.minutes > 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes!r}")
        for name in ("iters", "stop_after", "max_train_images", "max_val_images"):
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
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_iters >= 0):
            raise ValueError("need lr > 0, weight_decay >= 0 and warmup_iters >= 0, got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup_iters}")
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


class WarmupCosine:
    """Learning rate: linear warm-up over iterations, then cosine decay over progress.

    ``lr = base · w(i) · (f + (1 - f) · (1 + cos(π p)) / 2)`` with the warm-up factor
    ``w(i) = min(1, (i + 1) / warmup_iters)``, the final factor ``f`` and the progress
    ``p`` in [0, 1] (``iteration / iters``, or the fraction of the time budget used).
    (Goyal et al., 2017, for the warm-up; Loshchilov & Hutter, 2017, for the cosine.)

    Args:
        optimizer (nn.optim.Optimizer): whose groups' ``lr`` is set.
        warmup_iters (int): warm-up length.
        final_factor (float): ``f``.
    """

    def __init__(self, optimizer, warmup_iters, final_factor=0.02):
        self.optimizer = optimizer
        self.warmup_iters = int(warmup_iters)
        self.final_factor = float(final_factor)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_lr = list(self.base_lrs)

    def factor(self, iteration, progress):
        warm = min(1.0, (iteration + 1) / self.warmup_iters) if self.warmup_iters else 1.0
        progress = min(max(progress, 0.0), 1.0)
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return warm * (self.final_factor + (1 - self.final_factor) * cosine)

    def step(self, iteration, progress):
        """Set the rate of ``iteration`` at ``progress``; returns the first group's rate."""
        factor = self.factor(iteration, progress)
        self.last_lr = [base * factor for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self.last_lr):
            group["lr"] = lr
        return self.last_lr[0]

    def state_dict(self):
        return {"warmup_iters": self.warmup_iters, "final_factor": self.final_factor,
                "base_lrs": list(self.base_lrs), "last_lr": list(self.last_lr)}

    def load_state_dict(self, state):
        self.warmup_iters = int(state["warmup_iters"])
        self.final_factor = float(state["final_factor"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.last_lr = [float(v) for v in state["last_lr"]]
        for group, lr in zip(self.optimizer.param_groups, self.last_lr):
            group["lr"] = lr


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
        yield nn.data.collate_detection(samples)


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
    """Loss curves (per iteration, smoothed) and val mAP at each evaluation."""
    figure = Figure(figsize=(10, 4))
    ax_loss, ax_map = figure.subplots(1, 2)
    iterations = np.asarray(history["iteration"])
    for key, label in (("loss", "total"), ("classification", "focal (classification)"),
                       ("box_regression", "box regression")):
        values = np.asarray(history[key], dtype=np.float64)
        if values.size == 0:
            continue
        window = max(1, min(50, values.size // 10))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")  # moving mean
        ax_loss.plot(iterations[window - 1:], smooth, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (moving mean)")
    ax_loss.legend()
    ax_loss.set_title("training losses")
    evals = history["evaluations"]
    if evals:
        x = [e["iteration"] for e in evals]
        ax_map.plot(x, [e["map"] for e in evals], "o-", label="COCO mAP")
        for name in evals[-1]["ap50_per_class"]:
            ax_map.plot(x, [e["ap50_per_class"].get(name, float("nan")) for e in evals], "s--",
                        label=f"AP50 {name}")
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("iteration")
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
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return [None, None, None]


def _write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------- checkpoints
def _config_from(saved):
    values = dict(saved)
    values["eval_at"] = tuple(values["eval_at"])
    return TrainConfig(**values)


def load_run(path):
    """A run's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    model_config = RetinaNetConfig(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in checkpoint["model_config"].items()})
    model = RetinaNet(model_config)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


# --------------------------------------------------------------------- training
def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return replace(config, iters=config.iters or 6, warmup_iters=min(config.warmup_iters, 2),
                   eval_at=(1.0,), batch_size=min(config.batch_size, 4),
                   max_train_images=min(config.max_train_images or 16, 16),
                   max_val_images=min(config.max_val_images or 8, 8))


class _Run:
    """The state of a training run: model, optimizer, schedule, position, history.

    ``state``: ``epoch`` and ``batch`` (where the next batch comes from), ``iteration``,
    ``elapsed`` (seconds of this run over all sessions) and ``best_map``.
    """

    HISTORY_KEYS = ("iteration", "loss", "classification", "box_regression", "lr")

    def __init__(self, config):
        self.config = config
        # Separate seeded streams: initialisation (nn's default generator, seeded in
        # build_model), augmentation (below) and shuffling (the loader's seed).
        self.augment_rng = np.random.default_rng(np.random.SeedSequence(config.seed,
                                                                        spawn_key=(1,)))
        self.train_set, self.val_set = build_datasets(config, self.augment_rng)
        self.model = build_model(config)
        self.optimizer = nn.optim.AdamW(self.model.parameters(), lr=config.lr,
                                        weight_decay=config.weight_decay)
        self.schedule = WarmupCosine(self.optimizer, config.warmup_iters, config.final_lr_factor)
        self.loader = nn.data.DataLoader(
            self.train_set, batch_size=min(config.batch_size, len(self.train_set)),
            shuffle=True, drop_last=True, seed=config.seed, collate_fn=nn.data.collate_detection)
        self.history = {key: [] for key in self.HISTORY_KEYS}
        self.history["evaluations"] = []
        self.state = {"epoch": 0, "batch": 0, "iteration": 0, "elapsed": 0.0, "best_map": -1.0}

    def progress(self):
        """Fraction of the run done: of ``iters`` if set, else of the time budget."""
        if self.config.iters is not None:
            return self.state["iteration"] / self.config.iters
        return self.state["elapsed"] / (60.0 * self.config.minutes)

    def finished(self):
        return self.progress() >= 1.0 or self.state["elapsed"] >= 60.0 * self.config.minutes

    def next_batch(self):
        """The batch at (epoch, batch) of the seeded shuffled order; advances the position."""
        size = self.loader.batch_size
        order = self.loader.indices(self.state["epoch"])
        index = order[self.state["batch"] * size:(self.state["batch"] + 1) * size]
        self.state["batch"] += 1
        if self.state["batch"] == len(self.loader):
            self.state["epoch"] += 1
            self.state["batch"] = 0
        return nn.data.collate_detection([self.train_set[int(i)] for i in index])

    def train_step(self, images, targets):
        """Forward, loss, backward, clipping, update; records the losses."""
        lr = self.schedule.step(self.state["iteration"], self.progress())
        losses = self.model.loss(images, targets)
        self.optimizer.zero_grad()
        losses["loss"].backward()
        if self.config.clip_grad > 0:
            nn.optim.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.optimizer.step()
        for key in ("loss", "classification", "box_regression"):
            self.history[key].append(losses[key].item())
        self.history["iteration"].append(self.state["iteration"])
        self.history["lr"].append(lr)
        self.state["iteration"] += 1
        return losses["loss"].item(), lr

    def evaluate(self):
        """Val COCO evaluation; returns the record appended to the history."""
        metrics = evaluate(self.model, self.val_set, self.config.batch_size)["metrics"]
        self.model.train()
        record = {"iteration": self.state["iteration"], "elapsed": self.state["elapsed"],
                  "map": metrics["map"], "map_50": metrics["map_50"],
                  "ap50_per_class": metrics["ap50_per_class"],
                  "load_average": _load_average()[0]}  # other jobs slow the run down
        self.history["evaluations"].append(record)
        return record

    def checkpoint(self):
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            **self.state,
            "rng": {"augment": self.augment_rng.bit_generator.state,
                    "nn": nn.random.default_generator().bit_generator.state},
            "config": asdict(self.config),
            "model_config": asdict(self.model.config),
            "history": {key: np.asarray(self.history[key], np.float64)
                        for key in self.HISTORY_KEYS},
            "evaluations": json.dumps(self.history["evaluations"]),
        }

    def save(self, path):
        nn.save(self.checkpoint(), path)  # atomic: temp file + rename

    def restore(self, checkpoint):
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["scheduler"])
        for key in self.state:
            self.state[key] = checkpoint[key]
        self.augment_rng.bit_generator.state = checkpoint["rng"]["augment"]
        nn.random.default_generator().bit_generator.state = checkpoint["rng"]["nn"]
        for key in self.HISTORY_KEYS:
            self.history[key] = np.asarray(checkpoint["history"][key]).tolist()
        self.history["evaluations"] = json.loads(checkpoint["evaluations"])


def train_retinanet(config, resume=False):
    """Train (or resume) a RetinaNet on the plate scenes; evaluate the best checkpoint.

    Args:
        config (TrainConfig): the run.
        resume (bool): continue ``config.out/last.npz``; the saved configuration is
            used (only ``progress`` and ``stop_after`` come from ``config``).
    Returns:
        dict: the contents of ``metrics.json`` (val/test metrics of the best checkpoint,
        training and data-generation seconds, iterations, inference ms), or
        ``{"interrupted": True, "iteration": i}`` when ``stop_after`` ended the session.
    """
    config.validate()
    last_path = os.path.join(config.out, "last.npz")
    best_path = os.path.join(config.out, "best.npz")
    checkpoint = None
    if resume:
        if not os.path.isfile(last_path):
            raise FileNotFoundError(f"resume: no checkpoint {last_path}")
        checkpoint = nn.load(last_path)
        saved = _config_from(checkpoint["config"])
        config = replace(saved, progress=config.progress, stop_after=config.stop_after)
    elif config.quick:
        config = _quick(config)
    os.makedirs(config.out, exist_ok=True)
    run = _Run(config)
    if checkpoint is not None:
        run.restore(checkpoint)

    state = run.state
    budget = 60.0 * config.minutes
    timed_by_iters = config.iters is not None
    # The bar counts iterations, or seconds of the budget (then without a rate).
    bar = tqdm(total=config.iters if timed_by_iters else int(round(budget)),
               initial=state["iteration"] if timed_by_iters else int(state["elapsed"]),
               unit="it", disable=not config.progress, desc=f"retinanet-{config.backbone}",
               dynamic_ncols=True, bar_format=None if timed_by_iters else
               "{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]")
    session_start, elapsed_before = time.perf_counter(), state["elapsed"]
    last_save, session_iterations = session_start, 0
    run.model.train()
    while not run.finished():
        images, targets = run.next_batch()
        loss, lr = run.train_step(images, targets)
        session_iterations += 1
        previous = state["elapsed"]
        state["elapsed"] = elapsed_before + time.perf_counter() - session_start
        bar.update(1 if timed_by_iters else int(state["elapsed"]) - int(previous))
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", it=state["iteration"], refresh=False)
        # Evaluate at the configured fractions of the run (and always at its end).
        done = len(run.history["evaluations"])
        if run.finished() or (done < len(config.eval_at)
                              and run.progress() >= config.eval_at[done]):
            record = run.evaluate()
            bar.write(f"eval at iteration {state['iteration']} ({state['elapsed'] / 60:.1f} min): "
                      f"mAP {record['map']:.3f}, AP50 " + ", ".join(
                          f"{k} {v:.3f}" for k, v in record["ap50_per_class"].items()))
            state["elapsed"] = elapsed_before + time.perf_counter() - session_start
            if record["map"] > state["best_map"]:
                state["best_map"] = record["map"]
                run.save(best_path)
            run.save(last_path)
            last_save = time.perf_counter()
        elif time.perf_counter() - last_save > 60 * config.checkpoint_minutes:
            run.save(last_path)
            last_save = time.perf_counter()
        if config.stop_after is not None and session_iterations >= config.stop_after \
                and not run.finished():
            run.save(last_path)
            bar.close()
            return {"interrupted": True, "iteration": state["iteration"]}
    bar.close()
    if not os.path.isfile(best_path):  # resumed a finished run that was never evaluated
        run.evaluate()
        run.save(best_path)
    return _finish(config, state, run.history, best_path, run.val_set, run.train_set)


def _finish(config, state, history, best_path, val_set, train_set):
    """Evaluate the best checkpoint on val (and test), draw, time inference, write JSON."""
    model, checkpoint = load_run(best_path)
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
    plot_losses(history, os.path.join(config.out, "loss_curves.png"))
    result = {
        "config": asdict(config),
        "model_config": asdict(model.config),
        "parameters": int(sum(p.data.size for p in model.parameters())),
        "iterations": int(state["iteration"]),
        "epochs": state["iteration"] * config.batch_size / max(1, len(train_set)),
        "train_images": len(train_set),
        "training_seconds": float(state["elapsed"]),
        "best_iteration": int(max(history["evaluations"], key=lambda e: e["map"])["iteration"]),
        "val": _summary(val),
        "evaluations": history["evaluations"],
        "inference_ms_per_image": measure_inference(model, val_set),
        "load_average": _load_average(),
        "cpu_count": os.cpu_count(),
    }
    test_path = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if not config.quick and os.path.isfile(test_path):
        test_set = VOCDataset(config.data, "test", classes=class_names(config),
                              transforms=val_set.dataset.transforms)
        if len(test_set):
            result["test"] = _summary(evaluate(model, test_set, config.batch_size))
    _write_json(os.path.join(config.out, "metrics.json"), result)
    _write_json(os.path.join(config.out, "history.json"),
                {key: [float(v) for v in history[key]] for key in
                 ("iteration", "loss", "classification", "box_regression", "lr")}
                | {"evaluations": history["evaluations"]})
    return result


def _summary(evaluation):
    metrics = dict(evaluation["metrics"])
    metrics["images"] = len(evaluation["targets"])
    metrics["seconds"] = evaluation["seconds"]
    return metrics


# --------------------------------------------------------------------------- CLI
def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m detection.train_retinanet",
        description="Train RetinaNet from scratch on a Pascal VOC dataset.")
    parser.add_argument("--data", required=True, help="dataset root (Pascal VOC layout)")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="classes to detect (default: all but the background)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget (default 15)")
    parser.add_argument("--iters", type=int, default=None,
                        help="fixed iteration count (reproducible schedule) instead of the budget")
    parser.add_argument("--backbone", choices=("small", "resnet18"), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.npz")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=float, default=None,
                        help="backbone width multiplier (default: 1 for small, 0.5 for resnet18)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1; 0 keeps the library's default). On a "
                             "machine shared with other jobs one thread was 2-5x faster than "
                             "two: the threads of every GEMM wait for each other")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args, **defaults):
    """The ``TrainConfig`` of parsed command-line ``args``; ``defaults`` fill other fields
    (``model`` defaults are laid under ``--width``)."""
    model = dict(defaults.pop("model", {}))
    if args.width is not None:
        model["width_multiplier"] = args.width
    classes = defaults.pop("classes", None) if args.classes is None else tuple(args.classes)
    return TrainConfig(data=args.data, out=args.out, minutes=args.minutes, iters=args.iters,
                       backbone=args.backbone, seed=args.seed, quick=args.quick,
                       batch_size=args.batch_size, lr=args.lr, classes=classes,
                       stop_after=args.stop_after, progress=not args.no_progress,
                       model=model, **defaults)


def run_and_report(parser, config, resume):
    """Validate ``config`` (a bad value is a usage error), train, print the summary."""
    try:
        config.validate()
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    result = train_retinanet(config, resume=resume)
    if result.get("interrupted"):
        print(f"stopped after iteration {result['iteration']}; continue with --resume")
        return 0
    val = result["val"]
    print(f"val: COCO mAP {val['map']:.3f}, AP50 "
          + ", ".join(f"{k} {v:.3f}" for k, v in val["ap50_per_class"].items())
          + f"; {result['iterations']} iterations in {result['training_seconds'] / 60:.1f} min; "
          f"inference {result['inference_ms_per_image']:.0f} ms/image; "
          f"written to {os.path.join(config.out, 'metrics.json')}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_and_report(parser, config_from_args(args), args.resume)


_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _reexec_with_threads(argv, module="detection.train_retinanet"):
    """Re-run this command with the BLAS thread variables set, if ``--threads`` asks for it.

    BLAS thread pools are sized when NumPy is loaded, which has happened by the time
    the arguments are parsed: the only portable way to change them is a fresh process.
    """
    threads = build_parser().parse_known_args(argv)[0].threads
    if threads <= 0 or all(os.environ.get(n) == str(threads) for n in _THREAD_VARIABLES):
        return
    env = dict(os.environ, **{name: str(threads) for name in _THREAD_VARIABLES})
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


if __name__ == "__main__":
    _reexec_with_threads(sys.argv[1:])
    sys.exit(main())
