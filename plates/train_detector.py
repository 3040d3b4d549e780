"""Stage one of the lab: RetinaNet trained from scratch to find cars and plates.

The detector is ``detection.retinanet`` trained by ``detection.train_retinanet``; this
module adds what is particular to the plate scenes: the classes (``car``, ``plate``),
the anchors, and the data, rendered with ``plates.synthetic`` when the folder holds
none. Command::

    python -m plates.train_detector --data DIR --out RUN_DIR [--minutes 15 | --steps N]
        [--backbone small|resnet18] [--width W] [--seed 0] [--threads 1] [--resume] [--quick]
        [--quiet] [--num-images 2000]

Anchors, from measuring the generated boxes (``docs/retinanet_backbones.md``): plates
are small and wide (square-root area 15-80 px at 256 px, median 25; height/width
0.2-0.8), cars large (64-256 px). Hence pyramid levels P3-P6 (strides 8-64) with base
anchor sizes 16, 32, 64, 128 (three scales per octave) and ratios 0.25, 0.5, 1: every
car and 93% of the plates reach an anchor at IoU >= 0.5 (the rest are kept by the
low-quality matches).
"""
import os
import sys

from detection import train_retinanet
from nn.engine import parse_training_arguments, positive_int
from plates.synthetic import generate_plate_dataset

__all__ = ["DETECTOR_CLASSES", "PLATE_ANCHORS", "plate_detector_config", "detector_train_config",
           "ensure_dataset", "main"]

DETECTOR_CLASSES = ("car", "plate")
PLATE_ANCHORS = dict(levels=(3, 4, 5, 6), anchor_sizes=(16, 32, 64, 128),
                     aspect_ratios=(0.25, 0.5, 1.0))
DEFAULT_IMAGES = 2000


def plate_detector_config(backbone="small", quick=False, **overrides):
    """The RetinaNet configuration of the plate detector (module docstring).

    Args:
        backbone (str): ``"small"`` or ``"resnet18"``.
        quick (bool): a tiny network for smoke tests.
        **overrides: any ``RetinaNetConfig`` field.
    Returns:
        RetinaNetConfig
    """
    return train_retinanet.retinanet_config(len(DETECTOR_CLASSES), backbone, quick=quick,
                                            **{**PLATE_ANCHORS, **overrides})


def detector_train_config(data, out, **fields):
    """A ``detection.train_retinanet.TrainConfig`` for the plate detector.

    Args:
        data (str): dataset root of the plate scenes.
        out (str): run directory.
        **fields: other ``TrainConfig`` fields; ``model`` overrides are laid over the
            plate anchors.
    """
    model = {**PLATE_ANCHORS, **fields.pop("model", {})}
    return train_retinanet.TrainConfig(data=os.fspath(data), out=os.fspath(out),
                                       classes=DETECTOR_CLASSES, model=model, **fields)


def _has_dataset(root):
    return os.path.isfile(os.path.join(root, "ImageSets", "Main", "train.txt"))


def ensure_dataset(root, num_images=DEFAULT_IMAGES, seed=0, image_size=256, quick=False,
                   progress=True):
    """Render the plate scenes into ``root`` unless a dataset is there.

    Returns:
        dict or None: the generator's summary (with its ``seconds``), None if the data existed.
    """
    if _has_dataset(root):
        return None
    count = min(num_images, 24) if quick else num_images
    return generate_plate_dataset(root, count, seed, image_size=image_size,
                                  workers=os.cpu_count() or 1, progress=progress)


def build_parser():
    parser = train_retinanet.build_parser()
    parser.prog = "python -m plates.train_detector"
    parser.description = ("Train the lab's plate detector (RetinaNet, classes car and plate) "
                          "from scratch; renders the plate scenes into --data if it holds none.")
    parser.add_argument("--num-images", type=positive_int, default=DEFAULT_IMAGES,
                        help=f"scenes to render when DIR holds no dataset (default {DEFAULT_IMAGES})")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parse_training_arguments(parser, argv, train_retinanet.KIND)
    config = train_retinanet.config_from_args(args, classes=DETECTOR_CLASSES,
                                              model=dict(PLATE_ANCHORS))
    if not args.resume:
        ensure_dataset(args.data, args.num_images, image_size=config.image_size,
                       quick=args.quick, progress=config.progress)
    return train_retinanet.run_and_report(parser, config, args.resume, argv)


if __name__ == "__main__":
    sys.exit(main())
