"""Train localization as regression (``detection.localization``) on a Pascal VOC dataset.

The lecture's "Localization and Classification": one object per window, K class scores
and one box, trained three ways and compared, then the "predict exactly N objects"
model and where it breaks. Command::

    python -m detection.train_localization --data DIR --out RUN_DIR [--classes A B ...]
        [--minutes 3 | --steps N] [--seed 0] [--threads 1] [--resume] [--quick] [--quiet]
        [--window 48] [--slots 2] [--slot-classes A B ...] [--batch-size 32] [--lr 4e-3]

``DIR`` is an existing Pascal VOC dataset (the plate scenes are made by
``python -m plates.synthetic plates --out DIR --num-images N``); ``--classes`` picks the
object classes (default: every class of the dataset but the background).

Data. Windows are cut once from every image of a split (``sample_windows``,
``crop_windows``: ``draws`` windows per object, at 1.1-1.6x the object's longer side,
anywhere around it): the train split trains, val chooses each stage's best checkpoint, and the
tables are computed on test (held-out images; val when the dataset has no test split).

Four stages, each an engine run (``nn.engine``: budget, checkpoints, Ctrl-C, resume) in
a directory of its own, ``RUN_DIR/<stage>``:

1. ``classify``: regime (a), the classifier alone (best val accuracy);
2. ``localize``: regime (b), from classify's best weights, the classifier frozen and
   a box head trained on its features, computed once per window (best val mean IoU);
3. ``finetune``: regime (c), from localize's best weights, both heads end to end on
   ``cross_entropy + box_weight · smooth_l1`` (best val mean IoU);
4. ``slots``: an N-slot model (``--slots``) on windows of exactly N objects ordered
   left to right, its trunk started from finetune's, trained end to end; evaluated on
   windows of N - 1, N and N + 1 objects.

``--minutes`` is shared among them (``BUDGET_SHARES``); ``--steps`` gives each stage
that many steps. ``RUN_DIR/run.json`` records the configuration and each finished
stage; ``--resume`` skips those and continues the interrupted one from its
``last.npz``. ``RUN_DIR/metrics.json`` holds the comparison: for the prior (mean box,
most frequent class) and each regime, accuracy, mean IoU, the fraction with IoU >= 0.5
and both right; for the N-slot model, recall, precision, empty and duplicate slots per
number of objects.
"""
import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

import nn
from nn.engine import (Engine, ResumeError, TrainingInterrupted, add_training_arguments,
                       command_errors, load_checkpoint, parse_training_arguments,
                       positive_float, positive_int, resume_command)
from nn.io import atomic_write_text
from detection.datasets.voc import VOCDataset, read_class_names
from detection.localization import (BOX_ENCODINGS, Localizer, compute_features, crop_windows,
                                    decode_boxes, encode_boxes, evaluate_localizer,
                                    evaluate_slots, paired_box_iou, sample_windows,
                                    window_boxes)

__all__ = ["KIND", "STAGES", "BUDGET_SHARES", "TrainConfig", "class_names", "build_windows",
           "build_model", "load_stage", "train_localization", "build_parser", "main"]

KIND = "localization"
STAGES = ("classify", "localize", "finetune", "slots")
BUDGET_SHARES = {"classify": 0.3, "localize": 0.05, "finetune": 0.4, "slots": 0.25}
STAGE_METRIC = {"classify": "accuracy", "localize": "mean_iou", "finetune": "mean_iou",
                "slots": "mean_iou"}
RUN_FILE = "run.json"
_STREAMS = {"train": 0, "val": 1, "test": 2}  # seeds of the window draws per split


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in ``run.json`` and every checkpoint).

    Attributes:
        data (str): dataset root (Pascal VOC layout).
        out (str): run directory.
        classes (tuple[str] | None): object classes, labelled 0..K-1 in this order; None:
            every class of the dataset's ``labels.txt`` but the first (background).
        minutes (float or None): budget of the four stages together; steps (int or None):
            steps of each stage (at least one of the two).
        seed (int): seeds the windows, initialisation and shuffling.
        quick (bool): a seconds-long smoke run (tiny model, few images and steps).
        window (int): window side S in pixels (a multiple of the model's stride).
        draws (int): windows drawn per object (each at another scale and place).
        scale_range (tuple of float): window side over the object's longer side.
        slots (int): N of the N-slot model (>= 2).
        slot_classes (tuple[str] | None): the classes of the objects in the N-slot
            windows (None: all; e.g. the characters, for N characters read left to right).
        batch_size (int), lr (float), weight_decay (float): AdamW.
        warmup_steps (int), final_lr_factor (float): the schedule (``WarmupCosine``).
        box_weight (float), beta (float), giou_weight (float): the box loss (``Localizer``).
        encoding (str): box codes, ``"cxcywh"`` or ``"xywh"``.
        eval_at (tuple of float): fractions of each stage at which val is evaluated.
        max_train_images, max_val_images (int or None): use only the first images.
        model (dict): ``Localizer`` arguments (``widths``, ``hidden``, ``stride``,
            ``coordinates``).
        progress (bool): show progress bars.
    """

    data: str = "data/plates"
    out: str = "runs/localization"
    classes: tuple = None
    minutes: float = 3.0
    steps: int = None
    seed: int = 0
    quick: bool = False
    window: int = 48
    draws: int = 6
    scale_range: tuple = (1.1, 1.6)
    slots: int = 2
    slot_classes: tuple = None
    batch_size: int = 32
    lr: float = 4e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    final_lr_factor: float = 0.05
    box_weight: float = 20.0
    beta: float = 0.02
    giou_weight: float = 2.0
    encoding: str = "cxcywh"
    eval_at: tuple = (0.5, 1.0)
    max_train_images: int = None
    max_val_images: int = None
    model: dict = field(default_factory=dict)
    progress: bool = True

    def validate(self):
        if self.minutes is None and self.steps is None:
            raise ValueError("give minutes, steps or both")
        if self.minutes is not None and not (isinstance(self.minutes, (int, float))
                                             and 0 < self.minutes < float("inf")):
            raise ValueError(f"minutes must be a finite number > 0 or None, got {self.minutes!r}")
        for name in ("steps", "max_train_images", "max_val_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        for name, low in (("window", 8), ("draws", 1), ("slots", 2), ("batch_size", 1),
                          ("warmup_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.classes is not None and (
                isinstance(self.classes, str) or not self.classes
                or not all(isinstance(c, str) for c in self.classes)
                or len(set(self.classes)) != len(self.classes)):
            raise ValueError(f"classes must be distinct class names or None, got {self.classes!r}")
        if self.slot_classes is not None and (
                isinstance(self.slot_classes, str) or not self.slot_classes
                or not all(isinstance(c, str) for c in self.slot_classes)
                or (self.classes is not None and not set(self.slot_classes) <= set(self.classes))):
            raise ValueError(f"slot_classes must be names among the classes, or None, got "
                             f"{self.slot_classes!r}")
        if len(self.scale_range) != 2 or not 1 <= self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 1 <= low <= high, got "
                             f"{self.scale_range!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.box_weight >= 0
                and self.beta >= 0 and self.giou_weight >= 0 and 0 <= self.final_lr_factor <= 1):
            raise ValueError("need lr > 0, weight_decay, box_weight, beta, giou_weight >= 0 and "
                             "final_lr_factor in [0, 1]")
        if self.encoding not in BOX_ENCODINGS:
            raise ValueError(f"encoding must be one of {BOX_ENCODINGS}, got {self.encoding!r}")
        if not self.eval_at or any(not 0 < f <= 1 for f in self.eval_at) \
                or list(self.eval_at) != sorted(self.eval_at):
            raise ValueError(f"eval_at must be increasing fractions in (0, 1], got {self.eval_at}")
        if not isinstance(self.model, dict):
            raise TypeError(f"model must be a dict of Localizer arguments, got "
                            f"{type(self.model).__name__}")
        unknown = set(self.model) - {"widths", "hidden", "stride", "coordinates"}
        if unknown:
            raise ValueError(f"model has unknown Localizer arguments {sorted(unknown)}")
        stride = self.model.get("stride", 8)
        if self.window % stride:
            raise ValueError(f"window must be a multiple of the stride {stride}, got {self.window}")
        return self


def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return replace(config, steps=config.steps or 4, warmup_steps=min(config.warmup_steps, 1),
                   eval_at=(1.0,), batch_size=min(config.batch_size, 8), window=32, draws=1,
                   max_train_images=min(config.max_train_images or 8, 8),
                   max_val_images=min(config.max_val_images or 4, 4),
                   model={"widths": (4, 8, 8, 8), "hidden": 16, **config.model})


def class_names(config):
    """The object classes of a run, labelled 0..K-1 in this order."""
    if config.classes is not None:
        return tuple(config.classes)
    return tuple(read_class_names(config.data)[1:])


# ----------------------------------------------------------------------------- data
def build_windows(dataset, config, num_objects, stream, limit=None, classes=None):
    """Windows of ``num_objects`` objects cut from every image of a VOC split.

    Args:
        dataset (VOCDataset): with ``classes`` set (labels 1..K).
        config (TrainConfig): ``window``, ``draws``, ``scale_range``, ``seed``.
        num_objects (int): objects per window.
        stream (int): seeds the draws of this split (each image has its own generator,
            so a window does not depend on the other images).
        limit (int, optional): only the first images.
        classes (sequence of str, optional): only objects of these classes (names of the
            run's classes); the others are not objects of any window.
    Returns:
        dict: ``"windows"`` uint8 (G, S, S, 3), ``"labels"`` int64 (G, n) in 0..K-1,
        ``"boxes"`` float32 (G, n, 4) xyxy in window pixels, ``"codes"`` float32
        (G, n, 4), ``"images"`` int64 (G,) the image of each window.
    """
    size = config.window
    names = class_names(config)
    if classes is not None:
        unknown = sorted(set(classes) - set(names))
        if unknown:
            raise ValueError(f"classes {unknown} are not among the run's classes {list(names)}")
    wanted = np.array([names.index(c) for c in (names if classes is None else classes)])
    windows, labels, boxes, images = [], [], [], []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        image, target = dataset[index]
        kept = np.isin(target["labels"] - 1, wanted)
        object_boxes, object_labels = target["boxes"][kept], target["labels"][kept] - 1
        rng = np.random.default_rng(np.random.SeedSequence(config.seed,
                                                           spawn_key=(stream, num_objects, index)))
        for _ in range(config.draws):
            found, members = sample_windows(object_boxes, image.shape[:2], rng,
                                            num_objects=num_objects,
                                            scale_range=tuple(config.scale_range), attempts=64)
            windows.append(crop_windows(image, found, size))
            labels.append(object_labels[members])
            boxes.append(window_boxes(object_boxes[members], found, size))
            images.append(np.full(len(found), index, np.int64))
    if not windows:
        windows = [np.zeros((0, size, size, 3), np.uint8)]
        labels, boxes = [np.zeros((0, num_objects), np.int64)], [np.zeros((0, num_objects, 4))]
        images = [np.zeros(0, np.int64)]
    boxes = np.concatenate(boxes).astype(np.float32)
    return {"windows": np.concatenate(windows), "labels": np.concatenate(labels).astype(np.int64),
            "boxes": boxes, "codes": encode_boxes(boxes, size, config.encoding),
            "images": np.concatenate(images)}


def _datasets(config):
    """Train, val and evaluation splits (test if it has images, else val) and its name."""
    names = class_names(config)
    train = VOCDataset(config.data, "train", classes=names)
    val = VOCDataset(config.data, "val", classes=names)
    test_file = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if os.path.isfile(test_file):
        test = VOCDataset(config.data, "test", classes=names)
        if len(test):
            return train, val, test, "test"
    return train, val, val, "val"


def _all_windows(config):
    """Every window set of the run: single objects and N objects, per split."""
    train, val, held_out, held_out_name = _datasets(config)
    limits = {"train": config.max_train_images, "val": config.max_val_images,
              "test": config.max_val_images}
    sets = {"train": build_windows(train, config, 1, _STREAMS["train"], limits["train"]),
            "val": build_windows(val, config, 1, _STREAMS["val"], limits["val"]),
            "eval": build_windows(held_out, config, 1, _STREAMS[held_out_name],
                                  limits[held_out_name]),
            "slots_train": build_windows(train, config, config.slots, _STREAMS["train"],
                                         limits["train"], config.slot_classes),
            "slots_val": build_windows(val, config, config.slots, _STREAMS["val"], limits["val"],
                                       config.slot_classes)}
    for count in (config.slots - 1, config.slots, config.slots + 1):
        sets[f"slots_eval_{count}"] = build_windows(held_out, config, count,
                                                    _STREAMS[held_out_name],
                                                    limits[held_out_name], config.slot_classes)
    for name in ("train", "val", "slots_train", "slots_val"):
        if len(sets[name]["windows"]) == 0:
            raise ValueError(f"{config.data}: no window of the {name} set holds exactly "
                             f"{config.slots if 'slots' in name else 1} whole object(s) of "
                             f"the classes {list(class_names(config))}")
    return sets, held_out_name


# ---------------------------------------------------------------------------- model
def build_model(config, num_slots=1):
    """A freshly initialised ``Localizer`` for ``config`` (seeded by ``config.seed``)."""
    nn.manual_seed(config.seed)
    return Localizer(len(class_names(config)), image_size=config.window, num_slots=num_slots,
                     encoding=config.encoding, box_weight=config.box_weight, beta=config.beta,
                     giou_weight=config.giou_weight, **config.model)


def load_stage(path):
    """A stage's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    settings = dict(checkpoint["info"]["model_config"])
    settings["widths"] = tuple(settings["widths"])
    model = Localizer(**settings)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


def _numbers(result):
    """An evaluation without its arrays (what the engine and metrics.json keep)."""
    return {k: v for k, v in result.items() if k not in ("ious", "prediction")}


def _evaluate(model, data, config):
    """Single-object or N-object evaluation of ``model`` on a window set."""
    if model.num_slots == 1:
        return evaluate_localizer(model, data["windows"], data["labels"][:, 0],
                                  data["boxes"][:, 0])
    return evaluate_slots(model, data["windows"], data["labels"], data["boxes"])


def _prior(train, held_out, config):
    """The baseline of no image at all: the mean training box, the most frequent class."""
    mean_code = train["codes"][:, 0].mean(axis=0)
    guess = decode_boxes(np.broadcast_to(mean_code, held_out["codes"][:, 0].shape),
                         config.window, config.encoding)
    ious = paired_box_iou(guess, held_out["boxes"][:, 0])
    frequent = np.bincount(train["labels"][:, 0]).argmax()
    right = held_out["labels"][:, 0] == frequent
    return {"accuracy": float(right.mean()), "mean_iou": float(ious.mean()),
            "iou_50": float((ious >= 0.5).mean()), "both": float((right & (ious >= 0.5)).mean()),
            "count": int(len(ious))}


# ----------------------------------------------------------------------------- stages
def _run_stage(config, stage, model, train, val, resume, minutes):
    """Train one stage on the engine; returns the engine's summary."""
    regime = "finetune" if stage == "slots" else stage
    parameters = model.set_regime(regime)
    optimizer = nn.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    schedule = nn.optim.WarmupCosine(optimizer, config.warmup_steps, config.steps,
                                     final_factor=config.final_lr_factor,
                                     start_factor=1 / max(config.warmup_steps, 1))
    if stage == "localize":
        # The frozen classifier's features of each window never change: computed once,
        # the box head trains on them alone (a step costs a few microseconds).
        inputs = compute_features(model, train["windows"])
        loss = (lambda batch: model.head_loss(*batch))
    else:
        inputs = train["windows"]
        loss = (lambda batch: model.loss(*batch))
    data = nn.data.TensorDataset(inputs, train["labels"], train["codes"])
    loader = nn.data.DataLoader(data, batch_size=min(config.batch_size, len(data)), shuffle=True,
                                drop_last=True, seed=config.seed)
    out = os.path.join(config.out, stage)
    engine = Engine(out, f"{KIND}-{stage}", model, optimizer, loss=loss,
                    batches=loader, evaluate=lambda: _numbers(_evaluate(model, val, config)),
                    metric=STAGE_METRIC[stage], mode="max", schedule=schedule,
                    steps=config.steps, minutes=minutes, eval_at=config.eval_at,
                    checkpoint_minutes=1.0, config=asdict(config),
                    info={"model_config": model.config(), "regime": regime},
                    quiet=not config.progress)
    checkpoint = None
    if resume and os.path.isfile(engine.last_path):
        checkpoint = load_checkpoint(engine.last_path, f"{KIND}-{stage}")
    summary = engine.fit(checkpoint)
    engine.write_results()
    return summary


def _read_run(out):
    path = os.path.join(out, RUN_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            run = json.load(handle)
    except FileNotFoundError:
        raise ResumeError(f"--resume: {out} holds no localization run ({path} is missing)") \
            from None
    except (OSError, ValueError) as error:
        raise ResumeError(f"--resume: {path} is not readable: {error}") from None
    if not isinstance(run, dict) or run.get("kind") != KIND or "config" not in run:
        raise ResumeError(f"--resume: {path} is not the record of a localization run")
    return run


def _config_from(saved, progress):
    try:
        values = dict(saved)
        for name in ("eval_at", "scale_range"):
            values[name] = tuple(values[name])
        for name in ("classes", "slot_classes"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        if "widths" in values.get("model", {}):
            values["model"] = {**values["model"], "widths": tuple(values["model"]["widths"])}
        return replace(TrainConfig(**values), progress=progress).validate()
    except (KeyError, TypeError, ValueError) as error:
        raise ResumeError(f"the saved configuration is not a localization run's: {error}") \
            from None


def _write_run(config, run):
    atomic_write_text(os.path.join(config.out, RUN_FILE), json.dumps(run, indent=2) + "\n")


def train_localization(config, resume=False):
    """Run (or resume) the four stages; write ``metrics.json``.

    Args:
        config (TrainConfig): the run.
        resume (bool): continue the run in ``config.out`` with its saved configuration
            (only ``progress`` comes from ``config``).
    Returns:
        dict: the contents of ``metrics.json``.
    Raises:
        nn.engine.TrainingInterrupted: Ctrl-C (the stage's ``last.npz`` saved).
        nn.engine.ResumeError: ``resume`` without a run in ``config.out``.
        FileExistsError: ``config.out`` holds a run and ``resume`` is False.
    """
    config.validate()
    start = time.perf_counter()
    if resume:
        run = _read_run(config.out)
        config = _config_from(run["config"], config.progress)
    else:
        if os.path.isfile(os.path.join(config.out, RUN_FILE)):
            raise FileExistsError(f"{config.out} already holds a localization run: continue it "
                                  f"with --resume, or choose another --out")
        if config.quick:
            config = _quick(config)
        os.makedirs(config.out, exist_ok=True)
        run = {"kind": KIND, "config": asdict(config), "stages": {}}
        _write_run(config, run)
    sets, held_out_name = _all_windows(config)
    budget = {stage: None if config.minutes is None else config.minutes * share
              for stage, share in BUDGET_SHARES.items()}

    previous = None
    for stage in STAGES:
        if stage in run["stages"]:
            previous = stage
            continue
        slots = config.slots if stage == "slots" else 1
        model = build_model(config, num_slots=slots)
        if previous is not None:
            weights = nn.load(os.path.join(config.out, previous, "best.npz"))["model"]
            if stage == "slots":  # a new head: only the trunk and the fc layer carry over
                weights = {k: v for k, v in weights.items() if k.startswith(("trunk.", "fc."))}
            model.load_state_dict(weights, strict=stage != "slots")
        train, val = (sets["slots_train"], sets["slots_val"]) if stage == "slots" \
            else (sets["train"], sets["val"])
        summary = _run_stage(config, stage, model, train, val, resume, budget[stage])
        run["stages"][stage] = {key: summary[key] for key in
                                ("steps", "train_seconds", "stopped_by", "best_step", "best")}
        _write_run(config, run)
        previous = stage

    # The comparison, on the held-out split, with each stage's best weights.
    table = {"prior": _prior(sets["train"], sets["eval"], config)}
    for stage in ("classify", "localize", "finetune"):
        model, _ = load_stage(os.path.join(config.out, stage, "best.npz"))
        table[stage] = _numbers(_evaluate(model, sets["eval"], config))
    model, _ = load_stage(os.path.join(config.out, "slots", "best.npz"))
    by_objects = {}
    for count in (config.slots - 1, config.slots, config.slots + 1):
        data = sets[f"slots_eval_{count}"]
        if len(data["windows"]):
            by_objects[str(count)] = _numbers(evaluate_slots(model, data["windows"],
                                                             data["labels"], data["boxes"]))
    metrics = {
        "kind": KIND, "classes": list(class_names(config)), "window": config.window,
        "encoding": config.encoding, "eval_split": held_out_name,
        "windows": {name: int(len(data["windows"])) for name, data in sets.items()},
        "table": table, "slots": {"slots": config.slots, "by_objects": by_objects},
        "stages": run["stages"], "config": asdict(config),
        "seconds": round(time.perf_counter() - start, 1),
    }
    metrics = _defined(metrics)
    atomic_write_text(os.path.join(config.out, "metrics.json"),
                      json.dumps(metrics, indent=2) + "\n")
    return metrics


def _defined(value):
    """``value`` with every NaN (a mean of nothing, e.g. no empty slot) as None, as JSON has it."""
    if isinstance(value, dict):
        return {k: _defined(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_defined(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


# -------------------------------------------------------------------------------- CLI
def build_parser():
    """The command's flags: the engine's shared ones and the localizer's own."""
    parser = argparse.ArgumentParser(
        prog="python -m detection.train_localization",
        description="Localization as regression: three training regimes and N slots.")
    add_training_arguments(parser, minutes=TrainConfig.minutes, threads=1)
    parser.add_argument("--classes", nargs="+", default=None,
                        help="object classes (default: all but the background)")
    parser.add_argument("--window", type=positive_int, default=TrainConfig.window,
                        help="window side in pixels (a multiple of 8)")
    parser.add_argument("--slots", type=positive_int, default=TrainConfig.slots,
                        help="N of the N-slot model (>= 2)")
    parser.add_argument("--slot-classes", nargs="+", default=None,
                        help="classes of the objects in the N-slot windows (default: all)")
    parser.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=positive_float, default=TrainConfig.lr)
    return parser


def _parse(parser, argv):
    """Parse and check the command line (the engine's rules; ``--resume`` needs run.json,
    a new run an ``--out`` without one)."""
    args = parse_training_arguments(parser, argv, KIND, read_run=_read_run)
    if not args.resume and os.path.isfile(os.path.join(args.out, RUN_FILE)):
        parser.error(f"{args.out} already holds a localization run: continue it with "
                     f"--resume, or choose another --out")
    return args


def main(argv=None):
    parser = build_parser()
    args = _parse(parser, argv)
    config = TrainConfig(data=args.data, out=args.out, minutes=args.minutes, steps=args.steps,
                         seed=args.seed, quick=args.quick, window=args.window, slots=args.slots,
                         batch_size=args.batch_size, lr=args.lr,
                         classes=None if args.classes is None else tuple(args.classes),
                         slot_classes=None if args.slot_classes is None
                         else tuple(args.slot_classes),
                         progress=not args.quiet)
    try:
        config.validate()
        if not args.resume and not os.path.isdir(config.data):
            raise ValueError(f"--data {config.data} is not a directory; make a dataset with "
                             f"python -m plates.synthetic plates --out {config.data} "
                             f"--num-images N")
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    with command_errors(parser, argv):
        try:
            metrics = train_localization(config, resume=args.resume)
        except KeyboardInterrupt as stop:
            if isinstance(stop, TrainingInterrupted) \
                    or not os.path.isfile(os.path.join(args.out, RUN_FILE)):
                raise
            # Between the stages' training steps (windows, evaluation): run.json and the
            # finished stages are on disk, so the run continues.
            print(f"\ninterrupted outside a training step. Continue with:\n"
                  f"  {resume_command(parser, argv)}", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
    print(_table_text(metrics))
    print(f"written to {os.path.join(metrics['config']['out'], 'metrics.json')}")
    return 0


def _table_text(metrics):
    """The comparison as plain text (``-`` for an undefined number)."""
    def number(value, width):
        return f"{value:{width}.3f}" if value is not None else f"{'-':>{width}s}"

    lines = [f"held-out {metrics['eval_split']} windows: {metrics['table']['prior']['count']}",
             f"{'':10s} {'accuracy':>9s} {'mean IoU':>9s} {'IoU>=0.5':>9s} {'both':>6s}"]
    for name, row in metrics["table"].items():
        lines.append(f"{name:10s} {number(row['accuracy'], 9)} {number(row['mean_iou'], 9)} "
                     f"{number(row['iou_50'], 9)} {number(row['both'], 6)}")
    slots = metrics["slots"]
    lines.append(f"{slots['slots']} slots: objects  recall  precision  empty slots  duplicates")
    for count, row in slots["by_objects"].items():
        lines.append(f"{'':9s}{count:>7s} {number(row['recall'], 7)} "
                     f"{number(row['precision'], 10)} {number(row['empty_slots'], 12)} "
                     f"{number(row['duplicate_slots'], 11)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
