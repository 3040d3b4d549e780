"""``python -m plates``: the license-plate lab's command.

    python -m plates run    --out RUN_DIR [--minutes M] [--quick] [--seed S] [--resume]
    python -m plates read   --run RUN_DIR IMAGE_OR_DIR [...] --out OUT_DIR
    python -m plates report --run RUN_DIR
    python -m plates compare --run RUN_DIR [--minutes M] [--steps N] [--quick] [--resume]

``run`` does the whole lab (``plates.lab``), ``report`` rewrites the LaTeX report of a
run (``plates.report``), ``compare`` trains both stages again with ResNet-18 on a run's
data and writes ``RUN_DIR/comparison.json`` (``plates.compare``), ``read`` reads the
plates of photos with a run's two networks (``plates.reader``) and writes
``OUT_DIR/plates.json``::

    {"images": [{"file": "<path as given>", "width": W, "height": H,
                 "plates": [{"box": [x1, y1, x2, y2], "score": s, "text": "17## 9841",
                             "characters": [{"box": [...], "label": "5", "score": s}, ...]},
                            ...],
                 "annotated": "<name of the drawn image in OUT_DIR>"}, ...]}

plus, when some input could not be read, ``"errors": [{"file": ..., "error": ...}]``.
Boxes are continuous xyxy in the pixels of the original image (EXIF orientation
applied); ``text`` spells the characters in reading order, rows separated by one space,
another character than a digit as ``#``. A directory stands for its ``.jpg``, ``.jpeg``
and ``.png`` files (sorted, not recursive). Each input is drawn into ``OUT_DIR`` (plate
boxes, text and score, character masks) as ``<name>_plates.jpg``.

Exit status: 0 when every input was read; 1 when some input could not be (each one
named on standard error, the others still read and written); 2 for a usage error (bad
option, no trained run); 130 on Ctrl-C.
"""
import argparse
import json
import os
import sys

from tqdm import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _expand(inputs):
    """The files to read, in order, and the errors of inputs that hold none."""
    files, errors = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if name.lower().endswith(IMAGE_SUFFIXES)
                           and os.path.isfile(os.path.join(item, name)))
            if not found:
                errors.append({"file": item, "error": "directory holds no .jpg, .jpeg or .png "
                                                      "file"})
            files += found
        else:
            files.append(item)
    return files, errors


def _annotated_name(path, taken):
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, count = f"{stem}_plates.jpg", 1
    while name in taken:
        count += 1
        name = f"{stem}_plates_{count}.jpg"
    taken.add(name)
    return name


def read_command(args):
    """``python -m plates read``; returns the exit status."""
    from nn.io import atomic_write_text
    from plates.reader import PlateReader, load_image, save_annotated

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        print(f"plates read: --threshold must be in [0, 1], got {args.threshold}",
              file=sys.stderr)
        return 2
    if os.path.isfile(args.out):
        print(f"plates read: --out {args.out} is a file; it must be a directory", file=sys.stderr)
        return 2
    try:
        reader = PlateReader.from_run(args.run, plate_threshold=args.threshold,
                                      tta=args.tta)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"plates read: {exc}", file=sys.stderr)
        return 2
    files, errors = _expand(args.inputs)
    for error in errors:
        print(f"plates read: {error['file']}: {error['error']}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    images, taken = [], set()
    for path in tqdm(files, desc="read", unit="img", disable=args.quiet or len(files) < 2):
        try:
            image = load_image(path)
        except (OSError, ValueError) as exc:
            print(f"plates read: {exc}", file=sys.stderr)
            errors.append({"file": path, "error": str(exc)})
            continue
        reading = reader.read(image)
        entry = reading.to_json(path)
        entry["annotated"] = _annotated_name(path, taken)
        save_annotated(os.path.join(args.out, entry["annotated"]), image, reading)
        images.append(entry)
        if not args.quiet:
            texts = ", ".join(repr(p["text"]) for p in entry["plates"]) or "no plate"
            tqdm.write(f"{path}: {texts}")
    document = {"images": images}
    if errors:
        document["errors"] = errors
    output = os.path.join(args.out, "plates.json")
    atomic_write_text(output, json.dumps(document, indent=1) + "\n")
    print(f"wrote {output}: {len(images)} image(s) read"
          + (f", {len(errors)} input(s) could not be read" if errors else ""))
    return 1 if errors else 0


def build_parser():
    from plates import compare, lab, report

    parser = argparse.ArgumentParser(prog="python -m plates",
                                     description="The license-plate lab (Labwork 7).")
    commands = parser.add_subparsers(dest="command", required=True)
    lab.build_parser(commands.add_parser("run", help="the whole lab: data, training, "
                                                     "evaluation, report"))
    reading = commands.add_parser("read", help="read the plates of photos with a trained run")
    reading.description = "Read the plates of photos; writes OUT/plates.json and drawn images."
    reading.add_argument("--run", required=True, help="a run directory of python -m plates run")
    reading.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                         help="JPEG/PNG files, or directories of them")
    reading.add_argument("--out", required=True, help="output directory")
    reading.add_argument("--threshold", type=float, default=None,
                         help="plate score threshold (default: the run's, chosen on validation)")
    reading.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                         help="segment each crop as the average of five one-pixel shifts "
                              "(default: the run's setting, on unless reader.json says "
                              "otherwise); --no-tta: one pass, a fifth of the segmenter's work")
    reading.add_argument("--quiet", action="store_true", help="print only the summary")
    report.build_parser(commands.add_parser("report", help="write the LaTeX report of a run"))
    compare.build_parser(commands.add_parser("compare", help="the lab's extra: both stages "
                                                             "against ResNet-18 on a run's data"))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from plates import lab

        return lab.main(args)
    if args.command == "report":
        from plates import report

        return report.main(args)
    if args.command == "compare":
        from plates import compare

        return compare.main(args)
    try:
        return read_command(args)
    except KeyboardInterrupt:
        print("\nplates read: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
