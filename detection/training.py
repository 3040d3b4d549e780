"""What the detection trainers share: data, COCO evaluation, figures and the command.

``detection.train_retinanet``, ``detection.train_yolo`` and ``detection.train_rcnn``
train on a Pascal VOC dataset (``detection.datasets.voc``) resized to squares and
normalized with ``MEAN`` and ``STD``; each trainer supplies its model and loss, this
module the rest of a run:

- the configuration fields and checks they share (``DetectionTrainConfig``,
  ``check_detection_config``, ``check_selection``), the optimizer, the
  schedule and the loader (``optimizer_and_schedule``, ``train_loader``), the
  augmentation's generator, the validation and the engine (``augment_generator``,
  ``validation``, ``detection_engine``);
- the datasets (``class_names``, ``first``, ``build_datasets``), the ``--quick``
  settings (``quick_config``) and the model of a checkpoint (``restore``);
- COCO evaluation and timing (``evaluate``, ``measure_inference``), for samples
  ``(image, target)`` or ``(image, proposals, target)`` (``collate``);
- the figures (``plot_losses``, ``draw_detections``, ``save_pr_curves``) and the
  results of the best checkpoint (``run_results``, ``test_set``, ``split_summary``);
- a whole run of a detector trained on ``build_datasets`` (``fit_detector``);
- the command's parser and shared flags (``detection_parser``,
  ``add_detection_arguments``) and its end (``run_command``: usage errors, Ctrl-C, the
  summary line).
"""
import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from matplotlib.figure import Figure

import nn
from nn.engine import (Engine, add_training_arguments, command_errors, positive_float,
                       positive_int, start_run)
from detection.datasets.collate import collate_detection
from detection.datasets.transforms import (ColorJitter, Compose, Normalize, RandomCrop,
                                           RandomScale, Resize)
from detection.datasets.voc import VOCDataset, read_class_names
from detection.metrics import mean_average_precision, precision_recall_curve
from detection.visualize import draw_boxes, draw_masks, plot_pr_curves, save_figure, show_image

__all__ = ["MEAN", "STD", "DetectionTrainConfig", "check_detection_config", "check_selection",
           "class_names", "first", "build_datasets", "collate", "quick_config", "restore",
           "evaluate", "measure_inference", "augment_generator", "validation",
           "optimizer_and_schedule", "train_loader", "detection_engine", "load_average",
           "plot_losses", "draw_detections", "save_pr_curves", "split_summary", "test_set",
           "run_results", "fit_detector", "detection_parser", "add_detection_arguments",
           "run_command"]

# ImageNet statistics: the generated scenes are natural-looking RGB, any fixed
# normalization to roughly zero mean and unit variance serves.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------ configuration
@dataclass
class DetectionTrainConfig:
    """What every detection run depends on (saved in every checkpoint); each trainer's
    ``TrainConfig`` adds its own fields and defaults.

    Attributes:
        data (str): dataset root (Pascal VOC layout).
        out (str): run directory.
        classes (tuple[str] | None): the classes to detect, labelled 1..K in this order;
            None takes every class of the dataset's ``labels.txt`` but the first
            (background).
        minutes (float or None): wall-clock budget of training (evaluations included).
        steps (int or None): a fixed number of steps (reproducible schedule); with
            ``minutes`` too, the budget still stops the run if reached first. At least
            one of the two is needed.
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
        model (dict): overrides of the model's configuration.
        progress (bool): show progress bars.
    """

    data: str = "data/plates"
    out: str = "runs/detector"
    classes: tuple = None
    minutes: float = 15.0
    steps: int = None
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


def check_detection_config(config, model_class, positive=("batch_size", "image_size")):
    """The checks every detection ``TrainConfig`` shares (ValueError / TypeError naming
    the field): the budget, the image limits, the optimizer, the augmentation scales and
    ``check_selection``'s.

    Args:
        positive (tuple of str): the int fields that must be >= 1.
    """
    if config.minutes is None and config.steps is None:
        raise ValueError("give minutes, steps or both")
    if config.minutes is not None and not config.minutes > 0:
        raise ValueError(f"minutes must be > 0 or None, got {config.minutes!r}")
    for name in ("steps", "max_train_images", "max_val_images"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    for name in positive:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (config.lr > 0 and config.weight_decay >= 0 and config.warmup_steps >= 0):
        raise ValueError("need lr > 0, weight_decay >= 0 and warmup_steps >= 0, got "
                         f"{config.lr}, {config.weight_decay}, {config.warmup_steps}")
    if not 0 < config.min_scale <= config.max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {config.min_scale}, "
                         f"{config.max_scale}")
    check_selection(config, model_class)


def check_selection(config, model_class, fixed=()):
    """Check ``config.classes`` (distinct names or None), ``config.eval_at`` (increasing
    fractions in (0, 1]) and ``config.model`` (a dict of ``model_class`` fields but
    ``fixed``); ValueError / TypeError naming the field."""
    if config.classes is not None and (
            isinstance(config.classes, str) or not config.classes
            or not all(isinstance(c, str) for c in config.classes)
            or len(set(config.classes)) != len(config.classes)):
        raise ValueError(f"classes must be distinct class names or None, got {config.classes!r}")
    if not config.eval_at or any(not 0 < f <= 1 for f in config.eval_at) \
            or list(config.eval_at) != sorted(config.eval_at):
        raise ValueError(f"eval_at must be increasing fractions in (0, 1], got {config.eval_at}")
    name = model_class.__name__
    if not isinstance(config.model, dict):
        raise TypeError(f"model must be a dict of {name} overrides, got "
                        f"{type(config.model).__name__}")
    unknown = set(config.model) - ({f.name for f in fields(model_class)} - set(fixed))
    if unknown:
        raise ValueError(f"model has unknown {name} fields {sorted(unknown)}")


# ------------------------------------------------------------------------- data
def class_names(config):
    """The detected classes of a run: ``config.classes`` or the dataset's foreground names."""
    if config.classes is not None:
        return tuple(config.classes)
    return tuple(read_class_names(config.data)[1:])


def first(dataset, count):
    """The first ``count`` items of ``dataset`` (all of them when ``count`` is None)."""
    count = len(dataset) if count is None else min(count, len(dataset))
    return nn.data.Subset(dataset, range(count))


def build_datasets(config, augment_rng):
    """Train (augmented) and val (resized, normalized) datasets of the run's classes.

    Augmentation: random rescaling, a random crop and colour jitter; no horizontal flip
    (it mirrors text: plates, signs).
    """
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
    return first(train, config.max_train_images), first(val, config.max_val_images)


def collate(samples):
    """Batches of ``(images, targets)`` or ``(images, proposals, targets)``."""
    if len(samples[0]) == 2:
        return collate_detection(samples)
    images, targets = collate_detection([(s[0], s[2]) for s in samples])
    return images, [s[1] for s in samples], targets


def _predict(model, batch):
    if len(batch) == 3:
        return model.predict(batch[0], batch[1])
    return model.predict(batch[0])


def _label_names(dataset):
    """``label -> name`` of a VOCDataset (or of a dataset wrapping one)."""
    while not hasattr(dataset, "label_names"):
        dataset = dataset.dataset
    return dict(enumerate(dataset.label_names))


def quick_config(config, batch_size, train_images, val_images):
    """The settings of a seconds-long smoke run (``--quick``): 6 steps (unless ``steps``
    is set), 2 warm-up steps, one evaluation at the end, small batches, few images."""
    return replace(config, steps=config.steps or 6, warmup_steps=min(config.warmup_steps, 2),
                   eval_at=(1.0,), batch_size=min(config.batch_size, batch_size),
                   max_train_images=min(config.max_train_images or train_images, train_images),
                   max_val_images=min(config.max_val_images or val_images, val_images))


def restore(checkpoint, model_class, config_class):
    """The model saved in ``checkpoint`` (its ``info["model_config"]``, lists read back as
    tuples), in eval mode."""
    saved = checkpoint["info"]["model_config"]
    model = model_class(config_class(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in saved.items()}))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model


# ------------------------------------------------------------------- evaluation
def evaluate(model, dataset, batch_size=8):
    """COCO evaluation of ``model`` on ``dataset`` (a ``VOCDataset`` or a dataset wrapping
    one); box mAP, and mask mAP too when the targets carry ``"masks"``.

    Returns:
        dict: ``metrics`` (``mean_average_precision``'s dict plus ``ap50_per_class``,
        both keyed by class name; ``segm`` with masks), ``predictions`` and ``targets``
        (lists of dicts), ``curves`` (``precision_recall_curve`` at IoU 0.5), ``seconds``.
    """
    start = time.perf_counter()
    predictions, targets = [], []
    for begin in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))])
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
        batch = collate([dataset[i % len(dataset)]])
        start = time.perf_counter()
        _predict(model, batch)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def load_average():
    """The 1-minute load average (None where the OS has none): other jobs slow a run down."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------- training
def augment_generator(config):
    """The augmentation's generator, a seeded stream of its own: initialisation (nn's
    default generator, seeded in ``build_model``) and shuffling (the loader's seed) are
    separate streams."""
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))


def validation(model, dataset, batch_size):
    """The engine's ``evaluate`` of a detection run: COCO mAP, mAP at IoU 0.5 and AP50 per
    class of ``model`` on ``dataset`` (and the mask mAP, ``segm_map``, with masks), with
    the machine's load average."""
    def evaluate_model():
        metrics = evaluate(model, dataset, batch_size)["metrics"]
        record = {"map": metrics["map"], "map_50": metrics["map_50"],
                  "ap50_per_class": metrics["ap50_per_class"], "load_average": load_average()}
        if "segm" in metrics:
            record["segm_map"] = metrics["segm"]["map"]
        return record

    return evaluate_model


def optimizer_and_schedule(model, config):
    """AdamW and its schedule: linear warm-up from ``lr / warmup_steps``, then a cosine
    decay to ``final_lr_factor · lr`` at the last step (``nn.optim.WarmupCosine``)."""
    optimizer = nn.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = nn.optim.WarmupCosine(optimizer, config.warmup_steps, config.steps,
                                     final_factor=config.final_lr_factor,
                                     start_factor=1 / max(config.warmup_steps, 1))
    return optimizer, schedule


def train_loader(dataset, config, collate_fn=collate_detection):
    """Shuffled batches of ``config.batch_size`` (at most the dataset), seeded by
    ``config.seed``; the last incomplete batch of an epoch is dropped."""
    return nn.data.DataLoader(dataset, batch_size=min(config.batch_size, len(dataset)),
                              shuffle=True, drop_last=True, seed=config.seed,
                              collate_fn=collate_fn)


def detection_engine(config, kind, model, train_set, loss, validation, augment_rng,
                     collate_fn=collate_detection, metric="map"):
    """The engine of a detection run: AdamW with its schedule, the shuffled loader of
    ``train_set``, ``validation`` at ``config.eval_at``, the best ``metric`` kept, the
    augmentation generator saved with the checkpoints."""
    optimizer, schedule = optimizer_and_schedule(model, config)
    return Engine(
        config.out, kind, model, optimizer, loss=loss,
        batches=train_loader(train_set, config, collate_fn), evaluate=validation,
        metric=metric, mode="max", schedule=schedule, steps=config.steps,
        minutes=config.minutes, eval_at=config.eval_at,
        checkpoint_minutes=config.checkpoint_minutes, clip_grad=config.clip_grad or None,
        generators={"augment": augment_rng}, config=asdict(config),
        info={"model_config": asdict(model.config)}, quiet=not config.progress)


# ---------------------------------------------------------------------- figures
def plot_losses(history, path, terms, title="training losses", maps=(("map", "COCO mAP"),),
                ap50_label="AP50"):
    """Loss curves (per step, moving mean) and the val mAP at each evaluation.

    Args:
        history (dict): the engine's: ``losses`` (name -> per-step values) and
            ``evaluations`` (dicts with ``step``, the ``maps`` keys, ``ap50_per_class``).
        path (str): PNG file.
        terms (dict): loss name -> curve label (a term absent from the history is skipped).
        title (str): the title of the loss plot.
        maps (tuple of (key, label)): the evaluation numbers drawn (a key absent from
            the last evaluation is skipped).
        ap50_label (str): the label of the per-class AP50 curves, before the class name.
    """
    figure = Figure(figsize=(10, 4))
    ax_loss, ax_map = figure.subplots(1, 2)
    for key, label in terms.items():
        values = np.asarray(history["losses"].get(key, []), dtype=np.float64)
        if values.size == 0:
            continue
        window = max(1, min(50, values.size // 10))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")  # moving mean
        ax_loss.plot(np.arange(window, values.size + 1), smooth, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (moving mean)")
    ax_loss.legend(fontsize=7)
    ax_loss.set_title(title)
    evals = history["evaluations"]
    if evals:
        x = [e["step"] for e in evals]
        for key, label in maps:
            if key in evals[-1]:
                ax_map.plot(x, [e[key] for e in evals], "o-", label=label)
        for name in evals[-1]["ap50_per_class"]:
            ax_map.plot(x, [e["ap50_per_class"].get(name, float("nan")) for e in evals], "s--",
                        label=f"{ap50_label} {name}")
        ax_map.legend(fontsize=7)
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("step")
    ax_map.set_title("validation")
    figure.tight_layout()
    save_figure(figure, path)


def draw_detections(dataset, predictions, path, count=8, score_threshold=0.4):
    """A grid of val images with their detections (score >= threshold) drawn, and their
    masks where the predictions carry ``"masks"``."""
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


def save_pr_curves(curves, names, path, title="val precision-recall, IoU 0.5"):
    """The precision-recall curves at IoU 0.5 of the classes with a defined AP.

    Args:
        curves (dict): ``precision_recall_curve``'s result.
        names (sequence of str): class names, label ``k`` being ``names[k - 1]``.
        path (str): PNG file.
    """
    defined = curves["ap"] >= 0
    figure = Figure(figsize=(5, 4))
    plot_pr_curves(np.broadcast_to(curves["recall"], curves["precision"].shape)[defined],
                   curves["precision"][defined],
                   names=[names[k - 1] for k in curves["labels"][defined]], ax=figure.subplots(),
                   title=title)
    save_figure(figure, path)


# ---------------------------------------------------------------------- results
def split_summary(evaluation):
    """The metrics of one split's ``evaluate`` with its image count and seconds."""
    metrics = dict(evaluation["metrics"])
    metrics["images"] = len(evaluation["predictions"])
    metrics["seconds"] = evaluation["seconds"]
    return metrics


def test_set(config):
    """The test split of the run's dataset, resized and normalized (``config.max_val_images``
    is not applied: the whole split is evaluated)."""
    size = (config.image_size, config.image_size)
    return VOCDataset(config.data, "test", classes=class_names(config),
                      transforms=Compose([Resize(size), Normalize(MEAN, STD)]))


def run_results(engine, config, summary, model, train_set, val_set, test=test_set,
                score_threshold=0.4):
    """Evaluate the best checkpoint ``model`` on val (and test); draw; time inference.

    Writes ``detections.png`` (the boxes scored >= ``score_threshold``) and
    ``pr_curves.png`` of the val split in ``config.out``. The test
    split (``test(config)``) is evaluated when the dataset has one, except in ``--quick``.

    Returns:
        dict: ``model_config``, ``parameters``, ``epochs``, ``train_images``, ``val``
        (and ``test``: ``split_summary``), ``inference_ms_per_image``.
    """
    val = evaluate(model, val_set, config.batch_size)
    draw_detections(val_set, val["predictions"], os.path.join(config.out, "detections.png"),
                    score_threshold=score_threshold)
    save_pr_curves(val["curves"], class_names(config), os.path.join(config.out, "pr_curves.png"))
    results = {
        "model_config": asdict(model.config),
        "parameters": int(sum(p.data.size for p in model.parameters())),
        "epochs": summary["steps"] * engine.batches.batch_size / max(1, len(train_set)),
        "train_images": len(train_set),
        "val": split_summary(val),
        "inference_ms_per_image": measure_inference(model, val_set),
    }
    if not config.quick and os.path.isfile(
            os.path.join(config.data, "ImageSets", "Main", "test.txt")):
        dataset = test(config)
        if len(dataset):
            results["test"] = split_summary(evaluate(model, dataset, config.batch_size))
    return results


def fit_detector(config, resume, kind, what, quick, build_model, load_run, loss_terms,
                 title="training losses"):
    """Train (or resume) a detector whose ``loss(images, targets)`` takes the batches of
    ``build_datasets``; evaluate the best checkpoint; write the results.

    Args:
        config: the trainer's ``TrainConfig``.
        resume (bool): continue ``config.out/last.npz`` with its saved configuration (only
            ``progress`` comes from ``config``).
        kind (str), what (str), quick (callable): ``nn.engine.start_run``'s.
        build_model (callable): config -> a freshly initialised model.
        load_run (callable): path -> ``(model, checkpoint dict)``.
        loss_terms (dict), title (str): the loss curves drawn (``plot_losses``).
    Returns:
        dict: the contents of ``metrics.json``.
    Raises:
        nn.engine.TrainingInterrupted: Ctrl-C (``last.npz`` saved).
        nn.engine.ResumeError: ``resume`` without a ``last.npz`` of a ``kind`` run.
    """
    config, checkpoint = start_run(config, resume, kind, what, quick)
    augment_rng = augment_generator(config)
    train_set, val_set = build_datasets(config, augment_rng)
    model = build_model(config)
    engine = detection_engine(config, kind, model, train_set, lambda batch: model.loss(*batch),
                              validation(model, val_set, config.batch_size), augment_rng)
    summary = engine.fit(checkpoint)

    # The best checkpoint on val (and test): figures, inference time, metrics.json.
    best, _ = load_run(engine.best_path)
    results = run_results(engine, config, summary, best, train_set, val_set)
    plot_losses(engine.history, os.path.join(config.out, "loss_curves.png"), loss_terms, title)
    return engine.write_results(results)


# --------------------------------------------------------------------------- CLI
def detection_parser(prog, description, defaults, batch_size=True):
    """The parser of a detection trainer's command: the engine's shared flags and
    ``add_detection_arguments``'; the trainer adds its own.

    Args:
        prog (str): the command (``"python -m detection.train_retinanet"``).
        defaults: the trainer's ``TrainConfig`` class (the budget, batch size and lr).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    # On a machine shared with other jobs one thread was 2-5x faster than two: the
    # threads of every GEMM wait for each other.
    add_training_arguments(parser, minutes=defaults.minutes, threads=1)
    add_detection_arguments(parser, defaults, batch_size)
    return parser


def add_detection_arguments(parser, defaults, batch_size=True):
    """Add ``--classes``, ``--batch-size`` (unless ``batch_size`` is False) and ``--lr``
    to ``parser``, their defaults those of the ``TrainConfig`` class ``defaults``."""
    parser.add_argument("--classes", nargs="+", default=None,
                        help="classes to detect (default: all but the background)")
    if batch_size:
        parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--lr", type=positive_float, default=defaults.lr)


def run_command(parser, config, train, resume, argv=None, label="COCO mAP"):
    """Validate ``config`` (a bad value is a usage error), ``train(config, resume=resume)``,
    print the summary line; returns the exit status 0.

    Ctrl-C saves ``last.npz``, prints the command that continues the run and exits
    with status 130 (``nn.engine.command_errors``).
    """
    try:
        config.validate()
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    with command_errors(parser, argv, config.out):
        result = train(config, resume=resume)
    val = result["val"]
    line = (f"val: {label} {val['map']:.3f}, AP50 "
            + ", ".join(f"{k} {v:.3f}" for k, v in val["ap50_per_class"].items()))
    if "segm" in val:
        line += f"; mask mAP {val['segm']['map']:.3f}"
    print(line + f"; {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; "
          f"inference {result['inference_ms_per_image']:.0f} ms/image; written to "
          f"{os.path.join(result['config']['out'], 'metrics.json')}")
    return 0
