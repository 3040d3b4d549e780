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
import sys
from dataclasses import dataclass

import nn
from nn.engine import parse_training_arguments, positive_float
from detection.training import (DetectionTrainConfig, check_detection_config, class_names,
                                detection_parser, fit_detector, quick_config, restore, run_command)
from detection.yolo import YOLO, YOLOConfig

__all__ = ["KIND", "TrainConfig", "yolo_config", "build_model", "load_run", "train_yolo",
           "build_parser", "config_from_args", "main"]

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
class TrainConfig(DetectionTrainConfig):
    """Everything a YOLO run depends on (saved in every checkpoint): the fields of
    ``detection.training.DetectionTrainConfig``; ``image_size`` is a multiple of the
    stride (S = image_size / stride), ``model`` holds ``YOLOConfig`` overrides.
    """

    out: str = "runs/yolo"
    lr: float = 1e-3
    weight_decay: float = 5e-4  # the paper's

    def validate(self):
        check_detection_config(self, YOLOConfig)
        stride = self.model.get("stride", YOLOConfig.stride)
        if self.image_size % stride:
            raise ValueError(f"image_size must be a multiple of the stride {stride}, got "
                             f"{self.image_size}")
        return self


def build_model(config):
    """A freshly initialised YOLO for ``config`` (seeded by ``config.seed``)."""
    nn.manual_seed(config.seed)
    return YOLO(yolo_config(len(class_names(config)), quick=config.quick, **config.model))


def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return quick_config(config, batch_size=4, train_images=16, val_images=8)


# --------------------------------------------------------------------- training
def train_yolo(config, resume=False):
    """Train (or resume: continue ``config.out/last.npz`` with its saved configuration) a
    YOLO; evaluate the best checkpoint; write the results and return the contents of
    ``metrics.json`` (``detection.training.fit_detector``).
    """
    return fit_detector(config, resume, KIND, "a YOLO run's", _quick, build_model, load_run,
                        {"loss": "total", **{term: term for term in LOSS_TERMS}},
                        title="YOLO loss terms")


def load_run(path):
    """A run's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    return restore(checkpoint, YOLO, YOLOConfig), checkpoint


# --------------------------------------------------------------------------- CLI
def build_parser():
    """The command's flags: the engine's shared ones and the detector's own."""
    parser = detection_parser("python -m detection.train_yolo",
                              "Train YOLO (v1) from scratch on a Pascal VOC dataset.", TrainConfig)
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
    return run_command(parser, config_from_args(args), train_yolo, args.resume, argv)


if __name__ == "__main__":
    sys.exit(main())
