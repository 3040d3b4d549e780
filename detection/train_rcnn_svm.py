"""Train R-CNN (Girshick et al., CVPR 2014) from scratch on a Pascal VOC dataset.

The original R-CNN, ``detection.rcnn``: selective-search proposals, each warped to a
square and classified by a CNN, per-class linear SVMs on the CNN's features, per-class
box regression. (``detection.train_rcnn`` trains its successors, Fast, Faster and Mask
R-CNN.) Command::

    python -m detection.train_rcnn_svm --data DIR --out RUN_DIR [--classes car plate]
        [--minutes 15 | --steps N] [--max-train-images 500] [--max-val-images 100]
        [--proposals fast|quality] [--workers 1] [--seed 0] [--threads 1]
        [--resume] [--quick] [--quiet]

``DIR`` is a Pascal VOC dataset (``detection.datasets.voc``), e.g. one written by
``python -m plates.synthetic plates --out DIR --num-images 2000 --seed 0``; images are
resized to ``image_size`` (256) squares; ``--classes`` picks the classes (default: every
class of the dataset but the background). The run has four stages:

1. **Proposals.** Selective search (``detection.selective_search``, "fast" mode) on every
   train and val image used, once: they are deterministic, so they are computed before
   training and kept in ``RUN_DIR/proposals_<split>.npz`` (``nn.save``, written every
   ``PROPOSAL_SAVE_SECONDS`` while they are computed: an interrupted computation goes on
   where it stopped when the same command is run again). About 0.65 s of CPU per 256-px
   image; ``--workers`` processes share the images. Their time is reported apart from
   the training time (``proposal_seconds`` in ``metrics.json``).
2. **Fine-tuning the CNN** (the loop of ``nn.engine``: the budget, checkpoints,
   ``--resume``, Ctrl-C): the ``RegionCNN`` as a (K+1)-way classifier on minibatches of
   128 warped regions drawn from all training images at once, the paper's 32 regions
   with IoU >= 0.5 with an object (its class) and 96 background regions (the rest;
   the objects' own boxes are regions too). AdamW with a warm-up and a cosine decay
   (``nn.optim.WarmupCosine``). The val evaluations during training score regions with
   the CNN's softmax (no SVMs exist yet) on the first ``eval_images`` val images;
   ``best.npz`` holds the CNN of the best of them (COCO mAP).
3. **The heads**, after the loop: the CNN of ``best.npz`` gives the features of every
   region of the first ``svm_images`` training images; the per-class SVMs (positives:
   the objects' boxes; negatives: regions with IoU < 0.3 with every object of the class,
   hard negatives mined) and the box regressors (regions with IoU >= 0.6) are fitted on
   them (``RCNN.fit_heads_from``). The whole detector is saved in ``RUN_DIR/model.npz``
   (``load_model``). Run again (``--resume`` on a finished run), this stage repeats with
   the same result.
4. **Evaluation** of ``model.npz`` on val (and test when the dataset has one, without
   ``--quick``): COCO mAP and the other COCO numbers, AP per class, AP50 per class, with
   the SVMs (R-CNN's detector) and with the softmax (the paper's comparison); the
   inference time per image (selective search included) and its split into proposals,
   warp, features and heads.

``RUN_DIR`` receives ``last.npz``, ``best.npz`` (the engine's), ``model.npz``,
``proposals_*.npz``, ``history.json``, ``metrics.json``, ``loss_curves.png``,
``detections.png``, ``pr_curves.png``.
"""
import math
import multiprocessing
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

import nn
from nn._checks import (check_choice, check_finite, check_int, check_non_negative,
                       check_positive)
from nn.io import CheckpointError
from nn.engine import Engine, command_errors, parse_training_arguments, positive_int, start_run
from detection.datasets.transforms import Resize
from detection.datasets.voc import VOCDataset
from detection.metrics import mean_average_precision, precision_recall_curve
from detection.rcnn import RCNN, RCNNConfig, image_means, warp_regions_batch
from detection.selective_search import selective_search
from detection.training import (check_selection, class_names, detection_parser, load_average,
                                save_pr_curves, split_summary)
from detection.visualize import draw_boxes, save_figure, show_image

__all__ = ["KIND", "TrainConfig", "ProposalsInterrupted", "compute_proposals", "RegionBatches",
           "training_regions", "class_names", "load_split", "build_model", "evaluate",
           "measure_inference",
           "fit_heads", "load_model", "train_rcnn_svm", "build_parser", "add_proposal_arguments",
           "config_from_args",
           "main"]

KIND = "rcnn"  # the trainer's name in its checkpoints
PROPOSAL_SAVE_SECONDS = 60.0  # proposals being computed are saved at least this often
STAGES = ("proposals", "warp", "features", "heads")


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in every checkpoint).

    Attributes:
        data (str): dataset root (Pascal VOC layout).
        out (str): run directory.
        classes (tuple[str] | None): the classes to detect, labelled 1..K in this order;
            None takes every class of the dataset but the background.
        minutes (float | None), steps (int | None): the fine-tuning budget (the engine's;
            at least one of the two).
        seed (int): seeds the CNN's initialisation, the minibatches and the SVMs' sample.
        quick (bool): a seconds-long smoke run (tiny CNN, 128-px images, a few images).
        image_size (int): images are resized to this square (proposals included).
        proposals (str): selective-search mode, ``"fast"`` or ``"quality"``.
        max_train_images, max_val_images (int | None): the first images of each split
            (and of test); None uses them all.
        batch_size (int): regions per minibatch.
        positive_fraction (float): share of object regions in a minibatch (0.25: the
            paper's 32 of 128).
        lr (float), weight_decay (float): AdamW.
        warmup_steps (int), final_lr_factor (float): the schedule.
        clip_grad (float): gradient norm clip (0 = off).
        eval_at (tuple of float): fractions of the run at which val is evaluated.
        eval_images (int): val images of those evaluations (softmax scoring).
        checkpoint_minutes (float): save ``last.npz`` at least this often.
        svm_images (int): training images whose regions fit the SVMs and regressors.
        inference_images (int): val images timed end to end (selective search included).
        model (dict): ``RCNNConfig`` overrides (``num_classes`` comes from ``classes``).
        workers (int): processes computing the proposals (the result does not depend on it).
        progress (bool): progress bars.
    """

    data: str = "data/plates"
    out: str = "runs/rcnn"
    classes: tuple = None
    minutes: float = 15.0
    steps: int = None
    seed: int = 0
    quick: bool = False
    image_size: int = 256
    proposals: str = "fast"
    max_train_images: int = 500
    max_val_images: int = 100
    batch_size: int = 128
    positive_fraction: float = 0.25
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 100
    final_lr_factor: float = 0.02
    clip_grad: float = 10.0
    eval_at: tuple = (0.5, 0.75, 1.0)
    eval_images: int = 50
    checkpoint_minutes: float = 3.0
    svm_images: int = 100
    inference_images: int = 10
    model: dict = field(default_factory=dict)
    workers: int = 1
    progress: bool = True

    def validate(self):
        """Check every field (ValueError / TypeError naming it); returns ``self``."""
        if self.minutes is None and self.steps is None:
            raise ValueError("give minutes, steps or both")
        if self.minutes is not None:
            check_positive(self.minutes, "minutes")
        for name in ("steps", "max_train_images", "max_val_images"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, 1)
        for name in ("image_size", "batch_size", "eval_images", "svm_images",
                     "inference_images", "workers"):
            check_int(getattr(self, name), name, 1)
        for name in ("seed", "warmup_steps"):
            check_int(getattr(self, name), name, 0)
        check_choice(self.proposals, "proposals", ("fast", "quality"))
        if not 0 < check_finite(self.positive_fraction, "positive_fraction") < 1:
            raise ValueError(f"positive_fraction must lie in (0, 1), got "
                             f"{self.positive_fraction!r}")
        check_positive(self.lr, "lr")
        check_non_negative(self.weight_decay, "weight_decay")
        if check_positive(self.final_lr_factor, "final_lr_factor") > 1:
            raise ValueError(f"final_lr_factor must be in (0, 1], got {self.final_lr_factor!r}")
        check_non_negative(self.clip_grad, "clip_grad")
        check_positive(self.checkpoint_minutes, "checkpoint_minutes")
        check_selection(self, RCNNConfig, fixed=("num_classes",))
        return self


def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    model = {"widths": (8, 16, 32), "feature_dim": 32, **config.model}
    return replace(config, steps=config.steps or 6, warmup_steps=min(config.warmup_steps, 2),
                   eval_at=(1.0,), batch_size=min(config.batch_size, 32), image_size=128,
                   max_train_images=min(config.max_train_images or 6, 6),
                   max_val_images=min(config.max_val_images or 3, 3), eval_images=3,
                   svm_images=6, inference_images=1, model=model)


# ------------------------------------------------------------------------- data
def load_split(config, split, limit):
    """The first ``limit`` images of a split, resized, as arrays.

    Returns:
        tuple: ``images`` (ndarray[N, S, S, 3] uint8), ``targets`` (list of dicts with
        ``boxes`` float32 (G, 4) and ``labels`` int64 (G,)), ``ids`` (list of str).
    """
    size = (config.image_size, config.image_size)
    dataset = VOCDataset(config.data, split, classes=class_names(config),
                         transforms=Resize(size))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    images = np.zeros((count,) + size + (3,), np.uint8)
    targets = []
    for i in range(count):
        image, target = dataset[i]
        images[i] = image
        targets.append({"boxes": np.asarray(target["boxes"], np.float32).reshape(-1, 4),
                        "labels": np.asarray(target["labels"], np.int64).reshape(-1)})
    return images, targets, list(dataset.ids[:count])


# -------------------------------------------------------------------- proposals
class ProposalsInterrupted(KeyboardInterrupt):
    """Ctrl-C while proposals were computed; ``done`` of ``total`` images are kept in ``path``."""

    def __init__(self, path, done, total):
        super().__init__(f"proposals of {done}/{total} images kept in {path}")
        self.path, self.done, self.total = path, done, total


def _checksum(image):
    return zlib.crc32(np.ascontiguousarray(image).tobytes())


def _search(job):
    """Worker: selective search on one image (``job = (image, mode)``)."""
    image, mode = job
    return selective_search(image, mode=mode).astype(np.float32)


def _read_cache(path, mode, checksums):
    """The proposals of the first images that ``path`` holds for these images and mode."""
    if not os.path.isfile(path):
        return []
    try:
        cached = nn.load(path)
        if cached["mode"] != mode:
            return []
        known = list(cached["checksums"])
        done = len(known)
        if done > len(checksums) or known != list(checksums[:done]):
            return []
        counts = np.asarray(cached["counts"], np.int64)
        return np.split(np.asarray(cached["boxes"], np.float32), np.cumsum(counts)[:-1])[:done]
    except (CheckpointError, KeyError, TypeError, ValueError):
        return []  # not a cache of ours: computed again


def _write_cache(path, mode, checksums, found):
    counts = np.array([len(b) for b in found], np.int64)
    boxes = np.concatenate(found) if found else np.zeros((0, 4), np.float32)
    nn.save({"mode": mode, "checksums": [int(c) for c in checksums[:len(found)]],
             "counts": counts, "boxes": boxes.reshape(-1, 4)}, path)


def compute_proposals(images, path, mode="fast", workers=1, progress=True):
    """Selective-search proposals of every image, cached in ``path``.

    The cache holds the proposals of a prefix of the images, keyed by each image's CRC32
    and the mode: a cache of other images is replaced, one of the first images is
    completed. While computing, it is saved (``nn.save``, atomic) every
    ``PROPOSAL_SAVE_SECONDS`` and on Ctrl-C.

    Args:
        images (ndarray[N, H, W, 3] uint8): the images.
        path (str): the ``.npz`` cache.
        mode (str): ``"fast"`` or ``"quality"``.
        workers (int): processes (1: this one).
        progress (bool): a tqdm bar.
    Returns:
        tuple: ``proposals`` (list of N ndarray[P_i, 4] float32, best first) and the
        seconds spent computing (0 when everything was cached).
    Raises:
        ProposalsInterrupted: Ctrl-C (what was computed is saved first).
    """
    checksums = [_checksum(image) for image in images]
    found = _read_cache(path, mode, checksums)
    total = len(images)
    if len(found) == total:
        return found, 0.0
    start = time.perf_counter()
    last_save = start
    bar = tqdm(total=total, initial=len(found), desc=f"selective search ({os.path.basename(path)})",
               unit="img", disable=not progress, dynamic_ncols=True)
    jobs = ((images[i], mode) for i in range(len(found), total))
    pool = multiprocessing.get_context().Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_search, jobs) if pool is not None else map(_search, jobs)
        for boxes in results:
            found.append(boxes)
            bar.update(1)
            if time.perf_counter() - last_save > PROPOSAL_SAVE_SECONDS:
                _write_cache(path, mode, checksums, found)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        _write_cache(path, mode, checksums, found)
        raise ProposalsInterrupted(path, len(found), total) from None
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    _write_cache(path, mode, checksums, found)
    return found, time.perf_counter() - start


# ------------------------------------------------------------------ minibatches
class RegionBatches:
    """Endless minibatches of warped training regions, a fixed share of them objects.

    Every batch draws ``round(batch_size · positive_fraction)`` regions uniformly, without
    replacement, from all object regions of all images (label >= 1) and the rest from all
    background regions (label 0), as R-CNN's fine-tuning does, and warps them
    (``warp_regions_batch``). The draws come from ``rng``; ``state_dict()`` is its state
    and the number of batches drawn, which is all a checkpoint needs.

    Args:
        images (ndarray[N, H, W, 3] uint8): the training images.
        regions (dict): ``image`` (ndarray[M] int64), ``boxes`` (ndarray[M, 4]) and
            ``labels`` (ndarray[M] int64) of every region.
        batch_size (int), positive_fraction (float): the minibatch.
        warp_size (int), context (float): the warp (``RCNNConfig``).
        rng (np.random.Generator): the draws.
    """

    def __init__(self, images, regions, batch_size, positive_fraction, warp_size, context, rng):
        self.images, self.regions = images, regions
        self.means = image_means(images)
        self.positives = np.flatnonzero(regions["labels"] > 0)
        self.negatives = np.flatnonzero(regions["labels"] == 0)
        self.fg_count = min(self.positives.size, int(round(batch_size * positive_fraction)))
        self.bg_count = min(self.negatives.size, batch_size - self.fg_count)
        if self.fg_count + self.bg_count == 0:
            raise ValueError("the training images have no regions to sample")
        self.warp_size, self.context, self.rng = warp_size, context, rng
        self.drawn = 0

    def __iter__(self):
        return self

    def __next__(self):
        """``(crops ndarray[B, S, S, 3] float32, labels ndarray[B] int64)``, objects first."""
        picked = np.concatenate([
            self.rng.choice(self.positives, self.fg_count, replace=False),
            self.rng.choice(self.negatives, self.bg_count, replace=False)])
        crops = warp_regions_batch(self.images, self.regions["image"][picked],
                                   self.regions["boxes"][picked], self.warp_size,
                                   self.context, self.means)
        self.drawn += 1
        return crops, self.regions["labels"][picked]

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "drawn": self.drawn}

    def load_state_dict(self, state):
        if not isinstance(state, dict) or set(state) != {"rng", "drawn"}:
            raise ValueError("RegionBatches state must be a dict with 'rng' and 'drawn'")
        drawn = state["drawn"]
        if isinstance(drawn, bool) or not isinstance(drawn, int) or drawn < 0:
            raise ValueError(f"RegionBatches 'drawn' must be an int >= 0, got {drawn!r}")
        self.rng.bit_generator.state = state["rng"]
        self.drawn = drawn


def training_regions(model, targets, proposals):
    """Every region of every training image (``RCNN.label_regions``), for ``RegionBatches``.

    Returns:
        dict: ``image`` (ndarray[M] int64: the image index), ``boxes`` (ndarray[M, 4]
        float32), ``labels`` (ndarray[M] int64: fine-tuning labels, 0 background).
    """
    image, boxes, labels = [], [], []
    for index, (target, found) in enumerate(zip(targets, proposals)):
        regions = model.label_regions(target, found)
        image.append(np.full(regions["labels"].size, index, np.int64))
        boxes.append(regions["boxes"].astype(np.float32))
        labels.append(regions["labels"])
    return {"image": np.concatenate(image), "boxes": np.concatenate(boxes),
            "labels": np.concatenate(labels)}


# ------------------------------------------------------------------- the model
def build_model(config):
    """A freshly initialised ``RCNN`` for ``config`` (seeded by ``config.seed``)."""
    nn.manual_seed(config.seed)
    return RCNN(RCNNConfig(num_classes=len(class_names(config)), **config.model))


def _model_config_from(saved):
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    return RCNNConfig(**values)


def load_model(path):
    """The detector a run saved (``RUN_DIR/model.npz``): ``(RCNN, class names)``."""
    saved = nn.load(path)
    model = RCNN(_model_config_from(saved["model_config"]))
    model.load_state_dict(saved["model"])
    return model, tuple(saved["classes"])


# ------------------------------------------------------------------- evaluation
def evaluate(model, images, targets, proposals, names, scoring="svm"):
    """COCO evaluation of ``model.detect`` on images with their proposals.

    Returns:
        dict: ``metrics`` (``mean_average_precision``'s, ``map_per_class`` and
        ``ap50_per_class`` keyed by class name), ``predictions``, ``curves`` (AP50
        precision-recall), ``seconds``.
    """
    start = time.perf_counter()
    predictions = [model.detect(image, found, scoring) for image, found in zip(images, proposals)]
    truth = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    metrics = mean_average_precision(predictions, truth)
    curves = precision_recall_curve(predictions, truth, iou_threshold=0.5)
    metrics["map_per_class"] = {names[k - 1]: v for k, v in metrics["map_per_class"].items()}
    metrics["ap50_per_class"] = {names[int(k) - 1]: float(ap)
                                 for k, ap in zip(curves["labels"], curves["ap"])}
    return {"metrics": metrics, "predictions": predictions, "curves": curves,
            "seconds": time.perf_counter() - start}


def measure_inference(model, images, mode="fast"):
    """Seconds of ``model.predict`` per image (selective search included), median per stage.

    Returns:
        dict: ``total`` and each of ``STAGES``, in seconds per image; ``images``.
    """
    per_stage = {stage: [] for stage in STAGES}
    for image in images:
        model.predict(image, mode=mode)
        for stage in STAGES:
            per_stage[stage].append(model.timings[stage])
    medians = {stage: float(np.median(values)) for stage, values in per_stage.items()}
    totals = np.sum([per_stage[stage] for stage in STAGES], axis=0)
    return {"total": float(np.median(totals)), **medians, "images": len(images)}


# ------------------------------------------------------------------------ heads
def fit_heads(model, images, targets, proposals, generator=None, progress=True):
    """Fit the SVMs and box regressors on the features of every region of the images.

    Args:
        model (RCNN): its CNN gives the features; its heads are replaced.
        images (ndarray[N, H, W, 3]); targets (list of dicts); proposals (list of
            ndarray[P_i, 4]): the training images, their objects and proposals.
        generator (np.random.Generator | int | None): the SVMs' first sample of negatives
            (``RCNN.fit_heads``).
        progress (bool): a tqdm bar over the images.
    Returns:
        dict: ``images``, ``regions`` and ``seconds``.
    """
    start = time.perf_counter()
    prepared = []
    for image, target, found in tqdm(list(zip(images, targets, proposals)), desc="features",
                                     unit="img", disable=not progress, dynamic_ncols=True):
        prepared.append(model.prepare_features(image, target, found))
    model.fit_heads_from(prepared, generator=generator)
    return {"images": len(prepared), "regions": int(sum(p["boxes"].shape[0] for p in prepared)),
            "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------- figures
def plot_history(history, path):
    """Fine-tuning loss and accuracy per step (moving means), val softmax mAP per evaluation."""
    figure = Figure(figsize=(10, 4))
    ax_loss, ax_map = figure.subplots(1, 2)
    for key, label in (("loss", "cross entropy"), ("error", "error rate"),
                       ("object_error", "error on object regions")):
        values = np.asarray(history["losses"].get(key, []), dtype=np.float64)
        if values.size == 0:
            continue
        window = max(1, min(50, values.size // 10))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax_loss.plot(np.arange(window, values.size + 1), smooth, label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_title("fine-tuning (moving mean)")
    ax_loss.legend()
    evaluations = history["evaluations"]
    if evaluations:
        steps = [e["step"] for e in evaluations]
        ax_map.plot(steps, [e["map"] for e in evaluations], "o-", label="COCO mAP")
        for name in evaluations[-1]["ap50_per_class"]:
            ax_map.plot(steps, [e["ap50_per_class"].get(name, float("nan")) for e in evaluations],
                        "s--", label=f"AP50 {name}")
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("step")
    ax_map.set_title("val, softmax scoring")
    ax_map.legend()
    figure.tight_layout()
    save_figure(figure, path)


def draw_detections(images, predictions, names, path, count=8, score_threshold=0.0, top=10):
    """A grid of images with their best ``top`` detections of SVM score >= threshold."""
    count = min(count, len(images))
    columns = max(1, min(4, count))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for ax in axes[count:]:
        ax.set_axis_off()
    label_names = dict(enumerate(("background",) + tuple(names)))
    for image, det, ax in zip(images[:count], predictions, axes):
        show_image(ax, image)
        best = np.argsort(-det["scores"], kind="stable")[:top]
        draw_boxes(ax, det["boxes"][best], det["labels"][best], det["scores"][best],
                   class_names=label_names,
                   score_threshold=score_threshold, linewidth=1.5, fontsize=6)
    figure.tight_layout()
    save_figure(figure, path)


# --------------------------------------------------------------------- training
def train_rcnn_svm(config, resume=False):
    """Run the four stages (module docstring): proposals, fine-tuning, heads, evaluation.

    Args:
        config (TrainConfig): the run.
        resume (bool): continue ``config.out/last.npz`` with its saved configuration
            (only ``progress`` and ``workers`` come from ``config``).
    Returns:
        dict: the contents of ``metrics.json``.
    Raises:
        nn.engine.TrainingInterrupted: Ctrl-C during fine-tuning (``last.npz`` saved).
        ProposalsInterrupted: Ctrl-C while the proposals were computed (kept).
        nn.engine.ResumeError: ``resume`` without a ``last.npz`` of an R-CNN run.
    """
    config, checkpoint = start_run(config, resume, KIND, "an R-CNN run's", _quick,
                                   keep=("progress", "workers"))
    os.makedirs(config.out, exist_ok=True)
    names = class_names(config)

    # 1. Proposals, once per image.
    train_images, train_targets, _ = load_split(config, "train", config.max_train_images)
    val_images, val_targets, _ = load_split(config, "val", config.max_val_images)
    if len(train_images) == 0 or len(val_images) == 0:
        raise ValueError(f"dataset {config.data} needs train and val images, got "
                         f"{len(train_images)} and {len(val_images)}")
    proposal_seconds = {}
    proposals = {}
    for split, images in (("train", train_images), ("val", val_images)):
        proposals[split], proposal_seconds[split] = compute_proposals(
            images, os.path.join(config.out, f"proposals_{split}.npz"), config.proposals,
            config.workers, config.progress)

    # 2. Fine-tuning on the engine. Separate seeded streams: initialisation (nn's default
    # generator, seeded in build_model), minibatches and the SVMs' first sample.
    model = build_model(config)
    c = model.config
    regions = training_regions(model, train_targets, proposals["train"])
    batch_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    batches = RegionBatches(train_images, regions, config.batch_size, config.positive_fraction,
                            c.warp_size, c.context, batch_rng)
    net = model.net
    optimizer = nn.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = nn.optim.WarmupCosine(optimizer, config.warmup_steps, config.steps,
                                     final_factor=config.final_lr_factor,
                                     start_factor=1 / max(config.warmup_steps, 1))

    def loss(batch):
        crops, labels = batch
        logits = net(crops)
        predicted = logits.data.argmax(axis=1)
        objects = labels > 0
        return {"loss": nn.functional.cross_entropy(logits, labels),
                "error": float(np.mean(predicted != labels)),
                "object_error": float(np.mean(predicted[objects] != labels[objects]))
                if objects.any() else math.nan}

    count = min(config.eval_images, len(val_images))

    def validation():
        metrics = evaluate(model, val_images[:count], val_targets[:count],
                           proposals["val"][:count], names, scoring="softmax")["metrics"]
        return {"map": metrics["map"], "map_50": metrics["map_50"],
                "ap50_per_class": metrics["ap50_per_class"], "load_average": load_average()}

    engine = Engine(
        config.out, KIND, net, optimizer, loss=loss, batches=batches, evaluate=validation,
        metric="map", mode="max", schedule=schedule, steps=config.steps, minutes=config.minutes,
        eval_at=config.eval_at, checkpoint_minutes=config.checkpoint_minutes,
        clip_grad=config.clip_grad or None, config=asdict(config),
        info={"model_config": asdict(c)}, quiet=not config.progress)
    engine.fit(checkpoint)

    # 3. The heads, on the features of the best fine-tuned CNN.
    net.load_state_dict(nn.load(engine.best_path)["model"])
    svm_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2,)))
    used = min(config.svm_images, len(train_images))
    heads = fit_heads(model, train_images[:used], train_targets[:used],
                      proposals["train"][:used], svm_rng, config.progress)
    nn.save({"model": model.state_dict(), "model_config": asdict(c), "classes": list(names),
             "image_size": config.image_size, "proposals": config.proposals},
            os.path.join(config.out, "model.npz"))

    # 4. Evaluation.
    results = {
        "model_config": asdict(c),
        "parameters": int(sum(p.data.size for p in net.parameters())),
        "train_images": len(train_images),
        "train_regions": int(regions["labels"].size),
        "train_object_regions": int((regions["labels"] > 0).sum()),
        "proposals_per_image": float(np.median([len(p) for p in proposals["train"]])),
        "proposal_seconds": proposal_seconds,
        "heads": heads,
    }
    val = evaluate(model, val_images, val_targets, proposals["val"], names, scoring="svm")
    results["val"] = split_summary(val)
    results["val_softmax"] = split_summary(evaluate(model, val_images, val_targets,
                                                    proposals["val"], names, scoring="softmax"))
    test_path = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if not config.quick and os.path.isfile(test_path):
        test_images, test_targets, _ = load_split(config, "test", config.max_val_images)
        if len(test_images):
            test_proposals, proposal_seconds["test"] = compute_proposals(
                test_images, os.path.join(config.out, "proposals_test.npz"), config.proposals,
                config.workers, config.progress)
            results["test"] = split_summary(evaluate(model, test_images, test_targets,
                                                test_proposals, names, scoring="svm"))
    timed = val_images[:min(config.inference_images, len(val_images))]
    results["inference_seconds_per_image"] = measure_inference(model, timed, config.proposals)
    draw_detections(val_images, val["predictions"], names,
                    os.path.join(config.out, "detections.png"))
    save_pr_curves(val["curves"], names, os.path.join(config.out, "pr_curves.png"),
                   title="val precision-recall (SVMs), IoU 0.5")
    plot_history(engine.history, os.path.join(config.out, "loss_curves.png"))
    return engine.write_results(results)


# --------------------------------------------------------------------------- CLI
def build_parser():
    """The command's flags: the engine's shared ones and R-CNN's own."""
    parser = detection_parser(
        "python -m detection.train_rcnn_svm",
        "Train R-CNN (selective search, a CNN on warped regions, SVMs, box regression) from "
        "scratch on a Pascal VOC dataset.", TrainConfig, batch_size=False)
    add_proposal_arguments(parser, TrainConfig)
    return parser


def add_proposal_arguments(parser, defaults):
    """Add the flags of a trainer on selective-search proposals to ``parser``:
    ``--max-train-images``, ``--max-val-images``, ``--proposals`` and ``--workers``, their
    defaults those of the ``TrainConfig`` class ``defaults``."""
    parser.add_argument("--max-train-images", type=positive_int,
                        default=defaults.max_train_images,
                        help="use only the first N training images (selective search takes "
                             "about a second per 256-px image)")
    parser.add_argument("--max-val-images", type=positive_int, default=defaults.max_val_images,
                        help="use only the first N validation (and test) images")
    parser.add_argument("--proposals", choices=("fast", "quality"), default=defaults.proposals,
                        help="selective-search mode (default fast)")
    parser.add_argument("--workers", type=positive_int, default=defaults.workers,
                        help="processes computing the proposals (default 1)")


def config_from_args(args):
    """The ``TrainConfig`` of parsed command-line ``args``."""
    return TrainConfig(data=args.data, out=args.out, minutes=args.minutes, steps=args.steps,
                       seed=args.seed, quick=args.quick, lr=args.lr,
                       classes=None if args.classes is None else tuple(args.classes),
                       max_train_images=args.max_train_images,
                       max_val_images=args.max_val_images, proposals=args.proposals,
                       workers=args.workers, progress=not args.quiet)


def main(argv=None):
    parser = build_parser()
    args = parse_training_arguments(parser, argv, KIND)
    config = config_from_args(args)
    try:
        config.validate()
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    with command_errors(parser, argv, config.out):
        try:
            result = train_rcnn_svm(config, resume=args.resume)
        except ProposalsInterrupted as stop:
            print(f"\ninterrupted: {stop}; the same command (without --resume) computes the "
                  f"rest", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
    val, timing = result["val"], result["inference_seconds_per_image"]
    print(f"val: COCO mAP {val['map']:.3f} (softmax {result['val_softmax']['map']:.3f}), AP50 "
          + ", ".join(f"{k} {v:.3f}" for k, v in val["ap50_per_class"].items())
          + f"; {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; "
          f"inference {timing['total']:.2f} s/image ("
          + ", ".join(f"{stage} {timing[stage]:.2f}" for stage in STAGES)
          + f"); written to {os.path.join(result['config']['out'], 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
