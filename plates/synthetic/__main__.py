"""Command line: ``python -m plates.synthetic plates --out DIR --num-images N
--seed S [--image-size 256] [--workers K] [--quiet]``.

Bad arguments exit with status 2 and a message naming the argument (argparse's
convention), before anything is written.
"""
import argparse
import sys

from plates.synthetic.generate import generate_plate_dataset


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _positive_int(text):
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m plates.synthetic",
        description="Render synthetic datasets with exact boxes and masks.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plates = commands.add_parser(
        "plates", help="street scenes with cars, motorbikes and license plates (Pascal VOC)",
        description="Street scenes with cars, motorbikes and license plates, written in the "
                    "Pascal VOC layout with train/val/test splits.",
    )
    plates.add_argument("--out", required=True, help="output directory (dataset root)")
    plates.add_argument("--num-images", type=_non_negative_int, required=True,
                        help="number of images")
    plates.add_argument("--seed", type=_non_negative_int, default=0,
                        help="random seed (same seed, same bytes; default 0)")
    plates.add_argument("--image-size", type=_positive_int, default=256,
                        help="side of the square images in pixels (64..2048, default 256)")
    plates.add_argument("--workers", type=_positive_int, default=1,
                        help="parallel processes (the output does not depend on it)")
    plates.add_argument("--splits", type=float, nargs=3, default=(0.8, 0.1, 0.1),
                        metavar=("TRAIN", "VAL", "TEST"), help="split fractions (sum 1)")
    plates.add_argument("--format", choices=("jpg", "png"), default="jpg",
                        help="image file format (default jpg)")
    plates.add_argument("--jpeg-quality", type=_positive_int, default=90)
    plates.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = generate_plate_dataset(
            args.out, args.num_images, args.seed, image_size=args.image_size,
            workers=args.workers, splits=tuple(args.splits), image_format=args.format,
            jpeg_quality=args.jpeg_quality, progress=not args.quiet,
        )
    except (TypeError, ValueError, NotADirectoryError) as exc:
        parser.error(str(exc))
    if not args.quiet:
        seconds = summary["seconds"]
        rate = summary["num_images"] / seconds if seconds > 0 else float("inf")
        print(f"wrote {summary['num_images']} images to {summary['root']} "
              f"(train {summary['splits']['train']}, val {summary['splits']['val']}, "
              f"test {summary['splits']['test']}): {summary['cars']} vehicles, "
              f"{summary['plates']} plates, {summary['characters']} characters, "
              f"{summary['images_without_plate']} images without plate; "
              f"{seconds:.1f} s, {rate:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
