"""Write a synthetic plate dataset in the Pascal VOC layout, seeded and in parallel.

Determinism: image ``i`` of a run with seed ``s`` is rendered from its own generator,
``np.random.default_rng(np.random.SeedSequence(s, spawn_key=(0, i)))`` (NumPy's way of
deriving independent streams), so an image depends only on ``(s, i)`` and the image
size: the same seed gives byte-identical files whatever the number of workers and the
order in which they finish. The train/val/test split is a permutation drawn from a
third stream, ``spawn_key=(1,)``.

Nothing is half-written: ``write_voc_example`` writes every file atomically and the
annotation XML last, and the ``ImageSets`` lists, which readers go through, are
written only after every example is complete. If the run is interrupted, the lists are
not (re)written, and any temporary file left by a killed worker is removed.

Before any image is rendered, the image and annotation folders are created and a probe
file written and removed in each (``prepare_output_dir``): an unwritable destination
fails at once with ``OutputDirectoryError`` naming the folder, not after minutes of
rendering. Ids are formatted as they are needed (the tasks are a generator, which the
worker pool consumes as it goes: no list of ``num_images`` ids), and ``num_images`` is
bounded by ``MAX_IMAGES``.
"""
import errno
import glob
import io
import multiprocessing
import os
import time
from numbers import Integral, Real

import numpy as np
from PIL import Image
from tqdm import tqdm

from nn.io import atomic_write_bytes

from plates.synthetic import fonts
from plates.synthetic.plates import PlateMix
from plates.synthetic.scene import check_image_size, render_scene
from detection.datasets.voc import write_class_names, write_image_sets, write_voc_example
from plates.classes import PLATE_CLASSES

__all__ = ["SPLIT_NAMES", "MAX_IMAGES", "DECORATION_FOLDER", "OutputDirectoryError", "image_rng",
           "split_ids", "prepare_output_dir", "write_decoration_mask", "generate_plate_dataset"]

SPLIT_NAMES = ("train", "val", "test")
# Where each scene's decoration mask is written (``write_decoration_mask``): not a VOC
# folder, VOC readers pass it by.
DECORATION_FOLDER = "SegmentationDecoration"
# A bound on one run: 10 million images of 256 px are ~0.3 TB and a day of two cores.
MAX_IMAGES = 10_000_000
_IMAGE_STREAM, _SPLIT_STREAM = 0, 1
_FOLDERS = ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
            DECORATION_FOLDER)
_LIST_FOLDERS = ("ImageSets/Main", "ImageSets/Segmentation")


class OutputDirectoryError(OSError):
    """The dataset cannot be written where asked (the message names the folder and why)."""


def image_rng(seed, index):
    """The generator of image ``index`` of a run seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_IMAGE_STREAM, index)))


def _split_indices(count, seed, fractions):
    """Image indices of train/val/test (each sorted), from a seeded permutation."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,)))
    order = rng.permutation(count)
    n_val = int(round(count * fractions[1]))
    n_test = min(int(round(count * fractions[2])), count - n_val)
    n_train = count - n_val - n_test
    parts = np.split(order, [n_train, n_train + n_val])
    return {name: np.sort(part) for name, part in zip(SPLIT_NAMES, parts)}


def split_ids(ids, seed, fractions):
    """Assign ids to train/val/test by a seeded permutation.

    ``n_val = round(N * f_val)``, ``n_test = round(N * f_test)``, the rest is train; each
    list is sorted.

    Args:
        ids (list[str]): image ids.
        seed (int): the run's seed.
        fractions (tuple[float, float, float]): train, val, test fractions (sum 1).

    Returns:
        dict[str, list[str]]: ``{"train": [...], "val": [...], "test": [...]}``.
    """
    parts = _split_indices(len(ids), seed, fractions)
    return {name: sorted(ids[i] for i in part) for name, part in parts.items()}


def _id_width(num_images):
    return max(6, len(str(max(num_images - 1, 0))))


def prepare_output_dir(root):
    """Create the dataset's folders and check that a file can be written in each.

    ``ImageSets`` is only checked (no file may stand in its place): it is created with
    the split lists, after the last image.

    Args:
        root (str | os.PathLike): dataset root.

    Raises:
        OutputDirectoryError: a folder cannot be created (a file of that name is in the
            way, a parent is not a directory, the file system is read-only, permission
            is denied...) or a file cannot be written in it; the message names the
            folder and the reason.
    """
    root = os.fspath(root)
    for folder in ("",) + _FOLDERS + ("ImageSets",) + _LIST_FOLDERS:
        path = os.path.join(root, folder) if folder else root
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputDirectoryError(errno.ENOTDIR,
                                       f"{path!r} exists and is not a directory", path)
        if folder.startswith("ImageSets"):
            continue        # created last, with the lists: their presence marks a full set
        try:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, f".write-probe-{os.getpid()}")
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OutputDirectoryError(exc.errno, f"cannot write to {path!r}: {reason}",
                                       path) from None


def _check_arguments(out_dir, num_images, seed, image_size, workers, splits, image_format,
                     jpeg_quality, plate_mix):
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise TypeError(f"out_dir must be a non-empty path, got {out_dir!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"out_dir exists and is not a directory: {os.fspath(out_dir)!r}")
    if isinstance(num_images, bool) or not isinstance(num_images, Integral) or num_images < 0:
        raise ValueError(f"num_images must be a non-negative int, got {num_images!r}")
    if num_images > MAX_IMAGES:
        raise ValueError(f"num_images must be at most {MAX_IMAGES} per run, got {num_images}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    check_image_size(image_size)
    if isinstance(workers, bool) or not isinstance(workers, Integral) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if (not isinstance(splits, (tuple, list)) or len(splits) != 3
            or not all(isinstance(f, Real) and not isinstance(f, bool) and 0 <= f <= 1
                       for f in splits)
            or abs(sum(splits) - 1.0) > 1e-6):
        raise ValueError("splits must be 3 fractions (train, val, test) in [0, 1] summing to 1, "
                         f"got {splits!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, Integral) \
            or not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be an int in 1..100, got {jpeg_quality!r}")
    if plate_mix is not None and not isinstance(plate_mix, PlateMix):
        raise TypeError(f"plate_mix must be a PlateMix or None, got {type(plate_mix).__name__}")


def _generate_one(task):
    """Render and write one example (runs in a worker). Returns its statistics."""
    root, image_id, seed, index, image_size, image_format, jpeg_quality, plate_mix = task
    image, objects, class_mask, instance_mask, decoration = render_scene(
        image_rng(seed, index), image_size, plate_mix=plate_mix, decorations=True)
    write_decoration_mask(root, image_id, decoration)  # before the XML, written last
    write_voc_example(root, image_id, image, objects, class_mask=class_mask,
                      instance_mask=instance_mask, image_format=image_format,
                      jpeg_quality=jpeg_quality)
    names = [obj["name"] for obj in objects]
    return {"cars": names.count("car"), "plates": names.count("plate"),
            "characters": len(names) - names.count("car") - names.count("plate")}


def write_decoration_mask(root, image_id, decoration):
    """Write ``DECORATION_FOLDER/<image_id>.png`` atomically: a greyscale PNG of the
    scene's decoration ids (``plates.synthetic.decorations.DECORATION_IDS``, 0 none).

    The plates' strips, stickers, screws, separators, frames and dealer text are not
    characters; the mask says where they are, so a trainer can weigh them
    (``plates.train_segmenter.TrainConfig.decoration_weight``).

    Args:
        root (str | os.PathLike): dataset root (the folder must exist).
        image_id (str): the example's id.
        decoration (ndarray[H, W] uint8): ``render_scene(..., decorations=True)``'s mask.
    """
    decoration = np.asarray(decoration)
    if decoration.ndim != 2 or decoration.dtype != np.uint8:
        raise ValueError(f"decoration must be a 2-D uint8 array, got {decoration.dtype} "
                         f"{decoration.shape}")
    buffer = io.BytesIO()
    Image.fromarray(decoration).save(buffer, format="PNG")
    atomic_write_bytes(os.path.join(os.fspath(root), DECORATION_FOLDER, f"{image_id}.png"),
                       buffer.getvalue())


def _remove_temporaries(root):
    """Delete temporary files (``<name>.tmp-<pid>-<token>``) of interrupted writes."""
    for folder in _FOLDERS + _LIST_FOLDERS:
        for path in glob.glob(os.path.join(root, folder, "*.tmp-*")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def generate_plate_dataset(out_dir, num_images, seed, image_size=256, workers=1,
                           splits=(0.8, 0.1, 0.1), image_format="jpg", jpeg_quality=90,
                           progress=True, plate_mix=None):
    """Render ``num_images`` street scenes and write them as a Pascal VOC dataset.

    Layout (see ``detection.datasets.voc``): ``JPEGImages/<id>.jpg``,
    ``Annotations/<id>.xml``, ``SegmentationClass/<id>.png``,
    ``SegmentationObject/<id>.png``, ``ImageSets/{Main,Segmentation}/{train,val,test}.txt``,
    ``SegmentationDecoration/<id>.png`` (where the plates' decorations are,
    ``write_decoration_mask``),
    ``labels.txt`` (the class names, ``plates.classes.PLATE_CLASSES``);
    ids are ``000000``, ``000001``, ... (at least 6 digits).

    Args:
        out_dir (str | os.PathLike): dataset root, created if needed. Existing files of
            the same ids are replaced; others are left alone.
        num_images (int): number of images (>= 0).
        seed (int): non-negative seed; the same seed gives byte-identical files.
        image_size (int): side of the square images, 64..2048.
        workers (int): processes rendering in parallel (the output does not depend on it).
        splits (tuple[float, float, float]): train, val, test fractions.
        image_format (str): ``"jpg"`` or ``"png"``.
        jpeg_quality (int): JPEG quality 1..100.
        progress (bool): show a tqdm progress bar.
        plate_mix (PlateMix | None): probabilities of the plate features (strips,
            stickers, screws, frames, dirt...); ``plates.PlateMix()`` when None.

    Returns:
        dict: ``{"root", "num_images", "splits": {name: count}, "cars", "plates",
        "characters", "images_without_plate", "seconds"}``.

    Raises:
        TypeError / ValueError: naming the bad argument, before anything is written.
        OutputDirectoryError: ``out_dir`` cannot be written (before any rendering).
    """
    _check_arguments(out_dir, num_images, seed, image_size, workers, splits, image_format,
                     jpeg_quality, plate_mix)
    root = os.fspath(out_dir)
    start = time.perf_counter()
    prepare_output_dir(root)
    width = _id_width(num_images)
    # A generator: the pool takes tasks as workers free up, no list of num_images ids.
    tasks = ((root, f"{i:0{width}d}", int(seed), i, int(image_size), image_format,
              int(jpeg_quality), plate_mix) for i in range(num_images))
    fonts.available_fonts()  # discover once, before forking workers
    totals = {"cars": 0, "plates": 0, "characters": 0, "images_without_plate": 0}
    bar = tqdm(total=num_images, desc="plates", unit="img", disable=not progress)
    try:
        if workers == 1 or num_images <= 1:
            results = map(_generate_one, tasks)
            _collect(results, totals, bar)
        else:
            with multiprocessing.get_context().Pool(min(workers, num_images)) as pool:
                # Unordered: the bar moves as images finish; the files do not depend on it.
                results = pool.imap_unordered(_generate_one, tasks, chunksize=2)
                _collect(results, totals, bar)
    except BaseException:
        _remove_temporaries(root)
        raise
    finally:
        bar.close()
    indices = _split_indices(num_images, seed, tuple(float(f) for f in splits))
    parts = {name: [f"{i:0{width}d}" for i in part] for name, part in indices.items()}
    write_image_sets(root, parts)
    write_class_names(root, PLATE_CLASSES)
    return {"root": root, "num_images": num_images,
            "splits": {name: len(part) for name, part in parts.items()}, **totals,
            "seconds": time.perf_counter() - start}


def _collect(results, totals, bar):
    for stats in results:
        for key in ("cars", "plates", "characters"):
            totals[key] += stats[key]
        totals["images_without_plate"] += stats["plates"] == 0
        bar.update(1)
