"""Train the R-CNN family from scratch on a Pascal VOC dataset: Faster, Fast and Mask R-CNN.

Command::

    python -m detection.train_rcnn --model faster_rcnn|fast_rcnn|mask_rcnn --data DIR --out RUN_DIR
        [--classes car plate] [--minutes 15 | --steps N] [--backbone small|resnet18]
        [--batch-size 4] [--lr 2e-3] [--pooler pool|align] [--proposals fast|quality]
        [--workers 1] [--max-train-images N] [--max-val-images N] [--seed 0] [--threads 1]
        [--resume] [--quick] [--quiet]

- ``faster_rcnn`` (``detection.faster_rcnn.FasterRCNN``): RPN and Fast R-CNN head on a
  shared map, trained jointly (approximate joint training), pooling with RoIAlign
  (``--pooler pool`` for the paper's RoIPool; see ``model_config``);
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
import os
import sys
from dataclasses import dataclass

import numpy as np

import nn
from nn.engine import parse_training_arguments, start_run
from detection.datasets.transforms import (ColorJitter, Compose, Normalize, RandomCrop,
                                           RandomScale, Resize)
from detection.datasets.voc import VOCDataset
from detection.faster_rcnn import FasterRCNN, FasterRCNNConfig, FastRCNN
from detection.mask_rcnn import MaskRCNN, MaskRCNNConfig
from detection.train_rcnn_svm import add_proposal_arguments, compute_proposals
# MEAN, STD, class_names and evaluate are also imported from here.
from detection.training import (MEAN, STD, DetectionTrainConfig, augment_generator,  # noqa: F401
                                check_detection_config, class_names, collate, detection_engine,
                                detection_parser, evaluate, first, plot_losses, quick_config,
                                restore, run_command, run_results, validation)

__all__ = ["DETECTORS", "TrainConfig", "MasksAsTargets", "model_config", "class_names",
           "build_model", "evaluate", "load_run", "train_rcnn", "build_parser", "main"]

DETECTORS = ("faster_rcnn", "fast_rcnn", "mask_rcnn")
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
    # RoIAlign for Faster R-CNN too (the paper pooled with RoIPool): a plate is one or
    # two cells of the stride-8 map, and RoIPool's rounding to the grid costs it. On the
    # plate scenes, 15 minutes each on one core (commit 63110b4): val box mAP 0.783 and
    # plate AP50 1.000 with RoIAlign against 0.630 and 0.936 with RoIPool. Fast R-CNN
    # keeps its paper's RoIPool.
    if detector in ("faster_rcnn", "mask_rcnn"):
        settings["pooler"] = "align"
    if quick:
        settings.update(width_multiplier=0.5, feature_channels=16, representation_size=32)
    settings.update(overrides)
    return config_class(**settings).validate()


@dataclass
class TrainConfig(DetectionTrainConfig):
    """Everything a run depends on (saved in every checkpoint): the fields of
    ``detection.training.DetectionTrainConfig`` and

    Attributes:
        detector (str): ``"faster_rcnn"``, ``"fast_rcnn"`` or ``"mask_rcnn"``.
        backbone (str): ``"small"`` or ``"resnet18"``.
        proposals (str): selective-search mode of Fast R-CNN (``"fast"`` or ``"quality"``).
        workers (int): processes computing the proposals.
        model (dict): overrides of the model configuration.
    """

    detector: str = "faster_rcnn"
    out: str = "runs/faster_rcnn"
    backbone: str = "small"
    batch_size: int = 4
    proposals: str = "fast"
    workers: int = 1

    def validate(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.backbone not in ("small", "resnet18"):
            raise ValueError(f"backbone must be 'small' or 'resnet18', got {self.backbone!r}")
        check_detection_config(self, _model_classes(self.detector)[1],
                               positive=("batch_size", "image_size", "workers"))
        if self.proposals not in ("fast", "quality"):
            raise ValueError(f"proposals must be 'fast' or 'quality', got {self.proposals!r}")
        return self


# ------------------------------------------------------------------------- data
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
        dataset = first(dataset, limit)
        if masks:
            dataset = MasksAsTargets(dataset)
        if config.detector == "fast_rcnn":
            raw = first(VOCDataset(config.data, split, classes=classes,
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


# ------------------------------------------------------------------- checkpoints
def load_run(path):
    """A run's checkpoint as ``(model, checkpoint dict)``, the model in eval mode."""
    checkpoint = nn.load(path)
    return restore(checkpoint, *_model_classes(checkpoint["config"]["detector"])), checkpoint


# --------------------------------------------------------------------- training
def _quick(config):
    """The settings of a seconds-long smoke run (``--quick``)."""
    return quick_config(config, batch_size=2, train_images=8, val_images=4)


def train_rcnn(config, resume=False):
    """Train (or resume, ``resume``: continue ``config.out/last.npz`` with its saved
    configuration, only ``progress`` from ``config``) a detector of the R-CNN family;
    evaluate its best checkpoint; write the results and return the contents of
    ``metrics.json``.

    Ctrl-C raises ``nn.engine.TrainingInterrupted`` (``last.npz`` saved); a ``resume``
    without a ``last.npz`` of such a run, ``nn.engine.ResumeError``.
    """
    config, checkpoint = start_run(config, resume, config.detector, "an R-CNN run's", _quick)
    os.makedirs(config.out, exist_ok=True)
    augment_rng = augment_generator(config)
    train_set, val_set = build_datasets(config, augment_rng)
    model = build_model(config)

    def loss(batch):
        losses = model.loss(*batch)
        return {k: v for k, v in losses.items() if k == "loss" or k in LOSS_NAMES
                or k.startswith("num_") or k.startswith("rpn_num")}

    engine = detection_engine(config, config.detector, model, train_set, loss,
                              validation(model, val_set, config.batch_size), augment_rng,
                              collate_fn=collate,
                              metric="segm_map" if config.detector == "mask_rcnn" else "map")
    summary = engine.fit(checkpoint)

    # The best checkpoint on val (and test): figures, inference time, metrics.json.
    best, _ = load_run(engine.best_path)
    results = run_results(engine, config, summary, best, train_set, val_set, test=_test_set,
                          score_threshold=0.5)
    if config.detector == "fast_rcnn":
        results["proposal_seconds"] = {"train": train_set.seconds, "val": val_set.seconds}
    plot_losses(engine.history, os.path.join(config.out, "loss_curves.png"),
                {key: key.replace("_", " ") for key in ("loss",) + LOSS_NAMES},
                maps=(("map", "box mAP"), ("segm_map", "mask mAP")), ap50_label="box AP50")
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


# --------------------------------------------------------------------------- CLI
def build_parser():
    """The command's flags: the engine's shared ones and the detectors' own."""
    parser = detection_parser(
        "python -m detection.train_rcnn",
        "Train Faster R-CNN, Fast R-CNN or Mask R-CNN from scratch on a Pascal VOC dataset.",
        TrainConfig)
    parser.add_argument("--model", choices=DETECTORS, default="faster_rcnn",
                        help="the detector (default faster_rcnn)")
    parser.add_argument("--backbone", choices=("small", "resnet18"), default="small")
    parser.add_argument("--pooler", choices=("pool", "align"), default=None,
                        help="RoIPool or RoIAlign (default: align for faster_rcnn and mask_rcnn, "
                             "pool for fast_rcnn)")
    add_proposal_arguments(parser, TrainConfig)  # --proposals and --workers: fast_rcnn's
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
    return run_command(parser, config_from_args(args), train_rcnn, args.resume, argv,
                       label="COCO box mAP")


if __name__ == "__main__":
    sys.exit(main())
