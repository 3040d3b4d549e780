"""Command line: ``python -m plates.synthetic plates --out DIR --num-images N
--seed S [--image-size 256] [--workers K] [--plate-mix NAME=P ...] [--quiet]``, and
``python -m plates.synthetic gallery --out FILE.png`` (a figure of the plate styles).

Bad arguments exit with status 2 and a message naming the argument (argparse's
convention), before anything is written; so does an ``--out`` that cannot be written
(a read-only or missing parent, a file where a folder must go), before any rendering.
"""
import argparse
import sys

from plates.synthetic.generate import MAX_IMAGES, OutputDirectoryError, generate_plate_dataset
from plates.synthetic.plates import PLATE_FEATURES, parse_plate_mix


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


def _image_count(text):
    # Checked on the digits first: int() of a 10**6-digit string is slow, and refused
    # by Python's integer string conversion limit anyway.
    digits = text.strip()
    if digits.isdigit() and len(digits.lstrip("0")) > len(str(MAX_IMAGES)):
        raise argparse.ArgumentTypeError(f"at most {MAX_IMAGES} images per run, got {text[:40]}"
                                         + ("..." if len(text) > 40 else ""))
    value = _non_negative_int(text)
    if value > MAX_IMAGES:
        raise argparse.ArgumentTypeError(f"at most {MAX_IMAGES} images per run, got {value}")
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
    plates.add_argument("--num-images", type=_image_count, required=True,
                        help=f"number of images (at most {MAX_IMAGES})")
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
    plates.add_argument("--plate-mix", nargs="+", default=(), metavar="NAME=P",
                        help="probabilities of plate features, e.g. strip=0.5 dirt=0; names: "
                             + ", ".join(PLATE_FEATURES) + ", builtin_font")
    plates.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    gallery = commands.add_parser(
        "gallery", help="a figure of the plate styles (PNG)",
        description="A gallery of plates, one row per feature of the plate mix.")
    gallery.add_argument("--out", required=True, help="PNG file to write")
    gallery.add_argument("--seed", type=_non_negative_int, default=0)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "gallery":
        from plates.synthetic.gallery import save_plate_gallery
        try:
            size = save_plate_gallery(args.out, seed=args.seed)
        except OSError as exc:
            parser.error(f"--out: cannot write {args.out!r}: {exc.strerror or exc}")
        print(f"wrote {args.out} ({size} bytes)")
        return 0
    try:
        mix = parse_plate_mix(args.plate_mix)
    except ValueError as exc:
        parser.error(f"argument --plate-mix: {exc}")
    try:
        summary = generate_plate_dataset(
            args.out, args.num_images, args.seed, image_size=args.image_size,
            workers=args.workers, splits=tuple(args.splits), image_format=args.format,
            jpeg_quality=args.jpeg_quality, progress=not args.quiet, plate_mix=mix,
        )
    except (OutputDirectoryError, NotADirectoryError) as exc:
        parser.error(f"argument --out: {exc.strerror or exc}")
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    except OSError as exc:
        # Failing half-way (a full disk...): a message, no traceback, status 1.
        print(f"{parser.prog}: error: writing the dataset failed: {exc}", file=sys.stderr)
        return 1
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
