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
import sys
from dataclasses import dataclass

import nn
from nn.engine import parse_training_arguments, positive_float
from detection.retinanet import RetinaNet, RetinaNetConfig
# MEAN, STD, build_datasets, class_names, evaluate and measure_inference are also imported
# from here.
from detection.training import (MEAN, STD, DetectionTrainConfig, build_datasets,  # noqa: F401
                                check_detection_config, class_names, detection_parser, evaluate,
                                fit_detector, measure_inference, quick_config, restore,
                                run_command)

__all__ = ["KIND", "TrainConfig", "retinanet_config", "class_names", "build_model", "evaluate",
           "measure_inference", "load_run", "train_retinanet", "build_parser",
           "config_from_args", "run_and_report", "main"]

KIND = "retinanet"  # the trainer's name in its checkpoints
LOSS_TERMS = {"loss": "total", "classification": "focal (classification)",
              "box_regression": "box regression"}


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
class TrainConfig(DetectionTrainConfig):
    """Everything a RetinaNet run depends on (saved in every checkpoint): the fields of
    ``detection.training.DetectionTrainConfig`` and

    Attributes:
        backbone (str): ``"small"`` or ``"resnet18"``.
        model (dict): ``RetinaNetConfig`` overrides.
    """

    out: str = "runs/retinanet"
    backbone: str = "small"

    def validate(self):
        if self.backbone not in ("small", "resnet18"):
            raise ValueError(f"backbone must be 'small' or 'resnet18', got {self.backbone!r}")
        check_detection_config(self, RetinaNetConfig)
        return self


# ------------------------------------------------------------------------ model
def build_model(config):
    """A freshly initialised RetinaNet for ``config`` (seeded by ``config.seed``)."""
    nn.manual_seed(config.seed)
    return RetinaNet(retinanet_config(len(class_names(config)), config.backbone,
                                      quick=config.quick, **config.model))


# ------------------------------------------------------------------- checkpoints
def load_run(path):
    """A run's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    return restore(checkpoint, RetinaNet, RetinaNetConfig), checkpoint


# --------------------------------------------------------------------- training
def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return quick_config(config, batch_size=4, train_images=16, val_images=8)


def train_retinanet(config, resume=False):
    """Train (or resume: continue ``config.out/last.npz`` with its saved configuration) a
    RetinaNet; evaluate the best checkpoint; write the results.

    Returns:
        dict: the contents of ``metrics.json`` (the engine's summary, val/test metrics of
        the best checkpoint, inference ms per image).
    Raises:
        nn.engine.TrainingInterrupted, nn.engine.ResumeError: see
        ``detection.training.fit_detector``.
    """
    return fit_detector(config, resume, KIND, "a RetinaNet run's", _quick, build_model, load_run,
                        LOSS_TERMS)


# --------------------------------------------------------------------------- CLI
def build_parser():
    """The command's flags: the engine's shared ones and the detector's own."""
    parser = detection_parser("python -m detection.train_retinanet",
                              "Train RetinaNet from scratch on a Pascal VOC dataset.", TrainConfig)
    parser.add_argument("--backbone", choices=("small", "resnet18"), default="small")
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
    return run_command(parser, config, train_retinanet, resume, argv)


def main(argv=None):
    parser = build_parser()
    args = parse_training_arguments(parser, argv, KIND)
    return run_and_report(parser, config_from_args(args), args.resume, argv)


if __name__ == "__main__":
    sys.exit(main())
