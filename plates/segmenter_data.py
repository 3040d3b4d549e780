"""The digit segmenter's data: plate crops and their label maps, cut from the scenes.

Every plate of a scene is cut out at a fixed size (``plates.crops.crop_plates``) with
its label map in the segmenter's classes (``plates.classes.SEGMENTER_CLASSES``: 0
background, 1..10 the digits, 11 another character, 255 ignore for crop pixels outside
the image). A character's label is its *region* (``plates.targets``: the filled hull of
its ink, area-voted into the crop, a one-pixel gap kept to its neighbours).

- ``load_crops``: the fixed crops of a split (validation and test).
- ``TrainPatches``: each plate with some context around it, from which training crops
  are cut with jittered windows (the detector's boxes are never exact).
- ``augment_colors``, ``preprocess``: color jitter and per-crop standardization.
"""
import multiprocessing
import os
import time

import numpy as np
from tqdm import tqdm

from detection.datasets.voc import VOCDataset, read_label_map, read_rgb
from nn._checks import check_non_negative
from plates.classes import segmenter_label
from plates.crops import CROP_PADDING, CROP_SIZE, crop_plates, crop_windows, plate_texts
from plates.synthetic import generate_plate_dataset
from plates.synthetic.decorations import DECORATION_IDS
from plates.synthetic.generate import DECORATION_FOLDER
from plates.targets import character_regions, crop_coverage, crop_region_labels

__all__ = ["prepare_data", "TARGETS", "LABEL_SAMPLES", "LABEL_COVERAGE", "MARK_DECORATIONS",
           "decoration_path", "read_marks", "load_crops", "TrainPatches", "augment_colors",
           "preprocess"]

TARGETS = ("regions", "ink")  # what a character's label covers (plates.targets)
LABEL_SAMPLES, LABEL_COVERAGE = 4, 0.5  # area vote of the labels: 4x4 sub-pixels, half covered
# The plate decorations that are marks a segmenter may take for characters: a
# separator dot looks like a full stop, a strip's country code and dealer text are
# letters, a screw or sticker a blob (a frame is a border, not among them).
MARK_DECORATIONS = ("strip", "sticker", "screw", "separator", "frame_text")


def prepare_data(config):
    """Render the synthetic scenes into ``config.data`` unless a dataset is already there.

    Args:
        config: any object with ``data``, ``num_images``, ``data_seed``, ``image_size``,
            ``data_workers`` and ``progress`` (``plates.train_segmenter.TrainConfig``).

    Returns:
        dict: ``generated`` (bool) and ``seconds`` spent rendering (0 when reused).
    """
    marker = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if os.path.isfile(marker):
        return {"generated": False, "seconds": 0.0}
    start = time.perf_counter()
    generate_plate_dataset(config.data, config.num_images, config.data_seed,
                           image_size=config.image_size, workers=config.data_workers,
                           progress=config.progress)
    return {"generated": True, "seconds": time.perf_counter() - start}


def _check_workers(workers):
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")


def decoration_path(instance_mask_path):
    """The decoration mask beside a scene's instance mask: ``<root>/SegmentationDecoration/
    <id>.png`` (``plates.synthetic.generate.write_decoration_mask``; same id, same root)."""
    folder, name = os.path.split(os.fspath(instance_mask_path))
    return os.path.join(os.path.dirname(folder), DECORATION_FOLDER, name)


def read_marks(instance_mask_path, shape):
    """Where a scene's plates carry marks that are not characters (``MARK_DECORATIONS``).

    Returns:
        ndarray[H, W] bool, or None when the dataset has no decoration mask of the scene
        (datasets written without them, other VOC sets).
    """
    path = decoration_path(instance_mask_path)
    if not os.path.isfile(path):
        return None
    decoration = read_label_map(path)
    if decoration.shape != tuple(shape):
        raise ValueError(f"{path} has shape {decoration.shape}, its scene {tuple(shape)}")
    return np.isin(decoration, [DECORATION_IDS[name] for name in MARK_DECORATIONS])


def _read_plate_image(record, objects, targets):
    """One image's plates: ``(image, regions, class_of, plates, marks)``, or None without
    plates.

    ``image`` ndarray[H, W, 3] uint8, ``regions`` ndarray[H, W] int32
    (``plates.targets.character_regions``: 0 or the instance id of a character;
    with ``targets="ink"`` the ink alone), ``class_of`` ndarray[G + 1] int64 (class id of
    each instance id, 0 for what is not a character), ``plates``, a list of
    ``(box ndarray[4], text)``, and ``marks`` (``read_marks``: ndarray[H, W] bool or None).
    """
    plates = plate_texts(objects)
    if not plates:
        return None
    image = read_rgb(record["image_path"])
    instances = read_label_map(record["instance_mask_path"]).astype(np.int32)
    if instances.shape != image.shape[:2]:
        raise ValueError(f"{record['instance_mask_path']} does not match its image "
                         f"{record['image_path']}")
    class_of = np.zeros(len(objects) + 1, np.int64)  # instance id -> segmenter class
    for i, obj in enumerate(objects):
        class_of[i + 1] = segmenter_label(obj["name"])
    character_ids = np.flatnonzero(class_of)
    # The characters' boxes (exact for pixel masks, VOC's convention) bound the work:
    # at 1024 px they cover a few percent of the image.
    regions = np.zeros(instances.shape, np.int32)
    if character_ids.size:
        bounds = np.array([objects[i - 1]["bbox"] for i in character_ids])  # (C, 4)
        x0, y0 = np.maximum(np.floor(bounds[:, :2].min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.ceil(bounds[:, 2:].max(axis=0)).astype(int) + 1
        window = instances[y0:y1, x0:x1]
        regions[y0:y1, x0:x1] = (
            character_regions(window, character_ids) if targets == "regions"
            else np.where(np.isin(window, character_ids), window, 0))
    boxes = [np.asarray(objects[i]["bbox"], np.float64) for i, _ in plates]
    marks = read_marks(record["instance_mask_path"], image.shape[:2])
    return (image, regions, class_of, [(box, text) for box, (_, text) in zip(boxes, plates)],
            marks)


def _run_on_image(task):
    """Worker: read one image's plates and apply ``work`` to them (None without plates)."""
    work, record, objects, targets, params = task
    found = _read_plate_image(record, objects, targets)
    return None if found is None else work(*found, **params)


def _map_plate_images(root, split, targets, work, params, workers=1, progress=False):
    """``work(image, regions, class_of, plates, marks, **params)`` for every image with plates.

    Reading and decoding the images and building the character regions is most of the
    time, so with ``workers > 1`` it runs in that many processes (the results, small
    crops, come back in image order: the output does not depend on ``workers``).

    Yields:
        what ``work`` returns, image by image (images without plates skipped).
    """
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    _check_workers(workers)
    voc = VOCDataset(root, split, return_instance_masks=True)
    tasks = [(work, voc._records[i], voc.annotation(i)["objects"], targets, params)
             for i in range(len(voc))]
    bar = tqdm(total=len(tasks), desc=f"{split} plates", unit="img", disable=not progress,
               leave=False)
    try:
        if workers == 1 or len(tasks) <= 1:
            results = map(_run_on_image, tasks)
            for result in results:
                bar.update(1)
                if result is not None:
                    yield result
        else:
            with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
                for result in pool.imap(_run_on_image, tasks, chunksize=4):
                    bar.update(1)
                    if result is not None:
                        yield result
    finally:
        bar.close()


def _image_crops(image, regions, class_of, plates, marks, size, padding):
    """One image's plates as test crops: ``(crops, masks, texts)`` (see ``load_crops``)."""
    boxes = np.stack([box for box, _ in plates])  # (K, 4)
    crops, _, windows = crop_plates(image, boxes, size, padding)
    masks = crop_region_labels(regions, class_of, windows, size, LABEL_SAMPLES, LABEL_COVERAGE)
    return crops, masks, [text for _, text in plates]


def load_crops(root, split, size=CROP_SIZE, padding=CROP_PADDING, targets="regions", workers=1,
               progress=False):
    """Every plate of a split as a fixed-size crop, its label map and its text.

    The crop is ``crop_plates``'s (bilinear); the label map is
    ``plates.targets.crop_region_labels`` of the same window: character
    regions by area vote, neighbours separated.

    Args:
        root (str): VOC root; split (str): image set.
        size (tuple[int, int]), padding (float): crop geometry (``crop_plates``).
        targets (str): ``"regions"`` (default) or ``"ink"`` (what a character's label covers).
        workers (int): processes reading the images (the result does not depend on it).
        progress (bool): show a progress bar.

    Returns:
        dict: ``crops`` ndarray[P, h, w, 3] uint8, ``masks`` ndarray[P, h, w] uint8
        (segmenter labels: 0 background, 1..11 characters, 255 ignore) and ``texts`` list[str].
    """
    crops, masks, texts = [], [], []
    params = {"size": tuple(size), "padding": float(padding)}
    for image_crops, image_masks, image_texts in _map_plate_images(
            root, split, targets, _image_crops, params, workers, progress):
        crops.append(image_crops)
        masks.append(image_masks)
        texts += image_texts
    h, w = size
    return {"crops": np.concatenate(crops) if crops else np.zeros((0, h, w, 3), np.uint8),
            "masks": np.concatenate(masks) if masks else np.zeros((0, h, w), np.uint8),
            "texts": texts}


def _image_patches(image, regions, class_of, plates, marks, size, padding, context):
    """One image's plates as ``(patch, patch_regions, class_of, box, text, patch_marks)``.

    A patch is the crop window grown by ``context`` around the plate (clipped to the
    image); ``box`` is the plate box in the patch's coordinates; ``patch_marks`` the
    same part of ``marks`` (None without).
    """
    boxes = np.stack([box for box, _ in plates])  # (K, 4)
    windows = crop_windows(boxes, size, padding).astype(np.float64)
    centre = (windows[:, :2] + windows[:, 2:]) / 2  # (K, 2)
    half = (windows[:, 2:] - windows[:, :2]) * context / 2  # (K, 2)
    height, width = image.shape[:2]
    patches = []
    for k, (box, text) in enumerate(plates):
        x1, y1 = np.floor(np.maximum(centre[k] - half[k], 0)).astype(int)
        x2 = int(np.ceil(min(centre[k, 0] + half[k, 0], width)))
        y2 = int(np.ceil(min(centre[k, 1] + half[k, 1], height)))
        patches.append((image[y1:y2, x1:x2].copy(), regions[y1:y2, x1:x2].copy(), class_of,
                        box - [x1, y1, x1, y1], text,
                        None if marks is None else marks[y1:y2, x1:x2].copy()))
    return patches


class TrainPatches:
    """The training plates, ready for random crop windows.

    For each plate we keep the part of its image (and of its character regions) around
    the plate — the standard crop window grown by ``context`` — and the plate box inside
    it. A training crop is then ``crop_plates`` on that patch with a *jittered* box, and
    its labels ``crop_region_labels`` of the same window: the same resampling as a test
    crop, from a window shifted by up to ``shift`` of the box size, scaled by
    ``(1 + scale)**u`` and its height alone by ``(1 + stretch)**v`` (``u, v`` uniform in
    [-1, 1]). A detector's box errs more in height than in width (on the lab's test
    scenes the log-ratio of detected to true height has a std of 0.094, of width 0.047);
    the window keeps the crop's aspect ratio, so a height error zooms the crop of a box
    narrower than the crop (a third of the plates) and leaves a wide box's crop alone.

    Args:
        root (str): VOC root; split (str): image set.
        size (tuple[int, int]), padding (float): crop geometry (``crop_plates``).
        context (float): patch side relative to the crop window (covers the jitter).
        targets (str): ``"regions"`` (default) or ``"ink"``, see ``_read_plate_image``.
        workers (int): processes reading the images (the result does not depend on it).
        progress (bool): show a progress bar.
    """

    def __init__(self, root, split="train", size=CROP_SIZE, padding=CROP_PADDING, context=1.6,
                 targets="regions", workers=1, progress=False):
        self.size, self.padding = tuple(size), float(padding)
        self.patches, self.patch_regions, self.class_of, self.boxes, self.texts = [], [], [], [], []
        self.patch_marks = []
        params = {"size": self.size, "padding": self.padding, "context": float(context)}
        for image_patches in _map_plate_images(root, split, targets, _image_patches, params,
                                               workers, progress):
            for patch, patch_regions, class_of, box, text, patch_marks in image_patches:
                self.patches.append(patch)
                self.patch_regions.append(patch_regions)
                self.class_of.append(class_of)
                self.boxes.append(box)
                self.texts.append(text)
                self.patch_marks.append(patch_marks)
        self._marked = [marks is not None and bool(marks.any()) for marks in self.patch_marks]

    def __len__(self):
        return len(self.patches)

    @property
    def has_marks(self):
        """bool: every plate's scene has a decoration mask (``read_marks``)."""
        return all(marks is not None for marks in self.patch_marks)

    def sample(self, indices, rng, shift=0.06, scale=0.1, stretch=0.0, return_marks=False):
        """Crops of the plates ``indices`` from randomly moved windows.

        Args:
            indices (sequence of int): plates to crop, one crop each.
            rng (numpy.random.Generator): the jitter's draws.
            shift (float): largest move of the box centre, a fraction of its width
                (horizontally) and of its height (vertically).
            scale (float): box scaled by ``(1 + scale)**u``, ``u`` uniform in [-1, 1].
            stretch (float): box height scaled again by ``(1 + stretch)**v``, ``v``
                uniform in [-1, 1] (changes the box's aspect ratio; 0 keeps it).
            return_marks (bool): also return the share of each crop pixel covered by the
                plate's marks that are not characters (``read_marks``,
                ``plates.targets.crop_coverage``; 0 where the scene has no decoration mask).
        Returns:
            tuple: crops ndarray[B, h, w, 3] uint8 and masks ndarray[B, h, w] uint8, and
            with ``return_marks`` marks ndarray[B, h, w] float32 in [0, 1].
        """
        count = len(indices)
        for name, value in (("shift", shift), ("scale", scale), ("stretch", stretch)):
            check_non_negative(value, name)
        # x shift, y shift, log-scale (and log-stretch of the height, drawn only when used:
        # the draws of stretch=0 are those of a sampler without it)
        moves = rng.uniform(-1, 1, size=(count, 4 if stretch else 3))
        h, w = self.size
        crops = np.empty((count, h, w, 3), np.uint8)
        masks = np.empty((count, h, w), np.uint8)
        marks = np.zeros((count, h, w), np.float32) if return_marks else None
        for row, index in enumerate(indices):
            x1, y1, x2, y2 = self.boxes[index]
            bw, bh = x2 - x1, y2 - y1
            cx = (x1 + x2) / 2 + moves[row, 0] * shift * bw
            cy = (y1 + y2) / 2 + moves[row, 1] * shift * bh
            factor = (1 + scale) ** moves[row, 2]
            tall = factor * (1 + stretch) ** moves[row, 3] if stretch else factor
            box = np.array([[cx - factor * bw / 2, cy - tall * bh / 2,
                             cx + factor * bw / 2, cy + tall * bh / 2]])
            crop, _, window = crop_plates(self.patches[index], box, self.size, self.padding)
            crops[row] = crop[0]
            masks[row] = crop_region_labels(self.patch_regions[index], self.class_of[index],
                                            window, self.size, LABEL_SAMPLES, LABEL_COVERAGE)[0]
            if return_marks and self._marked[index]:  # most plates carry no mark
                marks[row] = crop_coverage(self.patch_marks[index], window, self.size,
                                           LABEL_SAMPLES)[0]
        if return_marks:
            return crops, masks, marks
        return crops, masks


def augment_colors(crops, rng, brightness=0.2, contrast=0.4, saturation=0.5, channel_gain=0.15,
                   noise=0.05):
    """Photometric jitter of a batch, one random setting per crop (no geometric change).

    In [0, 1] units: ``x ← ((x - mean) · c + mean + b)`` with ``c ~ 1 ± contrast``,
    ``b ~ ±brightness``; the color is pulled to or pushed from its grey value by
    ``1 ± saturation`` and each channel scaled by ``1 ± channel_gain``; then Gaussian
    noise of a random std in ``[0, noise]`` is added and the result clipped to [0, 1].

    Args:
        crops (ndarray[B, h, w, 3] uint8).
    Returns:
        ndarray[B, h, w, 3] float32 in [0, 1].
    """
    x = crops.astype(np.float32) / 255.0
    count = x.shape[0]
    draws = rng.uniform(-1, 1, size=(count, 7)).astype(np.float32)
    grey = x.mean(axis=3, keepdims=True)  # (B, h, w, 1)
    x = grey + (x - grey) * (1 + saturation * draws[:, 0])[:, None, None, None]
    x *= (1 + channel_gain * draws[:, 1:4])[:, None, None, :]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
    x = (x - mean) * (1 + contrast * draws[:, 4])[:, None, None, None] + mean
    x += brightness * draws[:, 5][:, None, None, None]
    sigma = noise * (draws[:, 6] + 1) / 2  # (B,) in [0, noise]
    x += rng.standard_normal(x.shape, dtype=np.float32) * sigma[:, None, None, None]
    return np.clip(x, 0, 1, out=x)


def preprocess(crops):
    """Network input: each crop standardized to zero mean and unit variance.

    Args:
        crops (ndarray[B, h, w, 3]): uint8 (0..255) or float (any scale).
    Returns:
        ndarray[B, h, w, 3] float32.
    """
    x = np.asarray(crops, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"crops must have shape (B, h, w, 3), got {x.shape}")
    mean = x.mean(axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.maximum(std, 1e-3 * max(float(np.abs(x).max()), 1e-6))
