"""What the numbered tutorials do before their first lesson (this file is not one).

Their command line (``--quick``, ``--out``, and ``--minutes`` for those that train), their
output folder, how they write a figure, and the plate scenes they learn from, rendered
once: ``python examples/NN_topic.py`` imports it from the tutorials' folder.
"""
import argparse
import os
import time

from detection.visualize import save_figure
from plates.synthetic import generate_plate_dataset


def command_line(doc, quick_help, out_help="directory for the dataset and figures",
                 minutes=None):
    """The parsed flags of a tutorial whose docstring is ``doc``.

    Args:
        quick_help (str): what ``--quick`` shrinks.
        minutes (float, optional): the default ``--minutes`` training budget of the full
            run (None: no such flag).
    Returns:
        argparse.Namespace: ``quick``, ``out`` (and ``minutes``).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default="out", help=out_help)
    if minutes is not None:
        parser.add_argument("--minutes", type=float, default=minutes,
                            help="training budget (full mode)")
    return parser.parse_args()


def output_folder(args, name):
    """``args.out/name``, created; a tutorial writes its dataset and figures there."""
    folder = os.path.join(args.out, name)
    os.makedirs(folder, exist_ok=True)
    return folder


def figure_writer(folder):
    """``save(figure, name)``: lay ``figure`` out (unless it has a layout already), write it
    to ``folder/name`` atomically and say so."""
    def save(figure, name):
        path = os.path.join(folder, name)
        if figure.get_layout_engine() is None:
            figure.tight_layout()
        save_figure(figure, path)
        print(f"wrote {path}")

    return save


def plate_scenes(folder, count, seed):
    """Render ``count`` street scenes (``plates.synthetic``, Pascal VOC layout) into
    ``folder`` unless they are there already; returns ``folder``."""
    if not os.path.isfile(os.path.join(folder, "ImageSets", "Main", "train.txt")):
        start = time.perf_counter()
        generate_plate_dataset(folder, count, seed=seed, workers=os.cpu_count() or 1,
                               progress=False)
        print(f"rendered {count} scenes in {time.perf_counter() - start:.1f} s")
    return folder
