"""Train the digit segmenter: a U-Net from scratch on synthetic plate crops.

Stage two of the license-plate lab. Every plate of the synthetic street scenes is cut
out at a fixed size (``plates.crops.crop_plates``) with its label map, in
which each pixel is background (0), a digit (3..12, digit ``d`` is ``3 + d``) or
another character (13), and 255 "ignore" (crop parts outside the image). A character's
label is its *region* (``plates.targets``: the filled hull of its ink, area-voted
into the crop, a one-pixel gap kept to its neighbours). A ``UNet`` learns that map with
``CE + Dice`` (``segmentation.losses``), the gaps weighted in the cross entropy;
``plates.reading.read_plate`` then turns a predicted map into the plate's
text, one connected blob per character.

Command::

    python -m plates.train_segmenter --data DIR --out RUN_DIR [--minutes 5 | --steps N]
        [--seed 0] [--resume] [--quick] [--quiet] [--threads T] [--no-tta]
        [--encoder unet|resnet18] [--encoder-width 0.25]

If ``DIR`` does not exist the synthetic scenes are rendered into it first (timed
apart from training). This page says what is trained; the loop, the budget, the
checkpoints, ``--resume`` and Ctrl-C are the engine's (``nn.engine``). The run
directory receives ``last.npz`` (every validation, and on Ctrl-C) and ``best.npz``
(the best validation mean IoU so far): each an atomic ``nn.save`` of the model, the
optimizer, the schedule, the step, the data order and generator state, the history
and the configuration. ``--resume`` continues from ``last.npz``; because every random
draw comes from state saved there, a resumed run repeats the uninterrupted one exactly
(``tests/plates/test_train_segmenter.py`` checks it bit for bit). At the end the best
checkpoint is evaluated on the test split (with test-time shifts,
``predict(..., tta=True)``, and in one pass; ``--no-tta``: one pass only) and
``metrics.json``, ``history.json``, ``loss_curve.png`` and ``predictions.png`` are
written.

Choices (measured on the synthetic plates, see ``docs/results.md``):

- **Data at 1024 px.** The generator sizes plates in proportion to the image. At its
  default 256 px the median character is 5 px tall and a third of the plates hold
  characters the generator itself marks "difficult" (< 5 px). At 512 px they are all
  readable, but 61% of the plates are under 90 px wide (median 81 px): glyphs 6-7 px
  wide, a pixel or two apart, blurred by the simulated camera (defocus up to 1.3 px,
  motion, JPEG) and enlarged into the crop. There a five-minute U-Net stalls at mean IoU
  0.70 / 54% read on plates under 70 px wide against 0.86 / 80% on those over 90 px.
  A plate reader reads the full-resolution frame (the detector may work on a smaller
  copy), so the segmenter's scenes are rendered at 1024 px: plates 120-500 px wide
  (median 163), each crop a sharp, downsampled plate. Five minutes then reach mean IoU
  0.91 and read 95% of the test plates (0.81 / 71% at 512 px; ``docs/results.md``).
- **Character regions, not ink** (``targets="regions"``): the ground-truth ink maps of
  the 32 x 96 test crops read exactly for only 61% of the plates (79% at 48 x 144: thin
  strokes break, neighbours touch); region labels read 98% (``plates.targets``).
- **Crops 40 x 120**, batch 12, and blobs of a single pixel kept
  when reading (``read_min_area = 1``). The smaller the crop, the more plates a
  five-minute run sees (batch 12 of 40 x 120 costs about what batch 8 of 48 x 144 or
  batch 16 of 32 x 96 does): the mean IoU after five minutes rises from 0.78 at
  48 x 144 to 0.79-0.80 at 40 x 120 and 0.80 at 32 x 96. But a plate's dots shrink with it, to
  one or two pixels at 32 x 96, where the ground-truth region maps read only 83% of the
  test plates with ``read_plate``'s default 2-pixel noise filter; kept down to one
  pixel they read 98% at 32 x 96 and 99% at 40 x 120 (99.7% at 48 x 144), and the
  trained networks read more plates too (40 x 120: 63% instead of 60%).
- **A 5% margin around the plate box** (``crop_padding = 0.05``; 0.1 before): the
  plate fills more of the crop, its characters get 9% more pixels each way for free.
  Five minutes at 40 x 120: mean IoU 0.807 and 72% of the test plates read, against
  0.798 / 63-69% with 10% and 0.802 / 72% with none (validation 71%, 65%, 67%). Some
  margin stays, because the detector's boxes are never exact.
- **Augmentation that suits text:** no flips (a mirrored "2" is no digit), but
  shifts and scalings of the crop window (the detector's boxes are never exact),
  color jitter (brightness, contrast, saturation, per-channel gain) and noise.
- **A U-Net of base 24 and depth 4** (24-192 channels, 1,084,956 parameters; 2.1x the
  step of base 16 and depth 3). The smaller U-Net underfits: it reads as many training
  plates as test plates. On the lab's scenes, crops of the detector's boxes: base 16 /
  depth 3 reads 86.4% of the test plates after 3217 steps, base 24 / depth 3 87.0% after
  2500, base 16 / depth 4 88.2% after 2800, base 24 / depth 4 90.2% after 2200 (one
  seed each, the same detector). The fourth level sees the whole plate height: the
  deeper networks lose less to a loose or shifted box than the wider one. Runs of one
  recipe spread by about two points; the default lab run (10.5 minutes, 1803 steps,
  the marks weighted) reads 90.5% of the test plates on the true boxes and 90.2% end
  to end (``docs/results.md``).
- **The background under a plate's marks weighted** (``decoration_weight = 10``: up to
  11x where a separator dot, screw, sticker, strip or dealer text covers the pixel;
  the generator writes where it drew them). A separator dot between the groups of a
  euro plate is a 2-pixel blob in a gap, like a full stop or a hyphen, which are
  characters and on most plates; weighed like any background pixel, the U-Net read
  nearly every dot as a character (10 of the 42 plates a lab run misread). On that
  run's scenes, with its seed and its 2090 steps: 91.4% of the test plates read on
  the true boxes instead of 87.9% (validation 88.0% against 85.8%), 89.6% end to end
  with the same detector instead of 87.6% (extra characters 15 -> 7); a weight of 30
  overshoots (89.1%, more characters merged and missed).
- **Input standardization per crop** (zero mean, unit variance): plates come in
  every color and exposure; what matters is the contrast of the glyphs.
- **Schedule:** Adam, linear warm-up then cosine decay to the last step
  (``nn.optim.WarmupCosine``). The number of steps is either given (``--steps N``) or
  fitted to the time budget by the engine: the warm-up steps (whose rates do not
  depend on the total) are timed and at the end of the warm-up the total is set so
  that training ends within ``--minutes``. If the machine slows down later (other jobs
  on a shared machine), each validation shortens the total again so that the decay
  still ends in time, and lengthens it when the steps got faster than planned (so that
  the budget is used) — a run refitted this way is not repeated exactly by
  ``--steps N``; a run whose clock never binds is. The chosen total is printed and
  saved (``total_steps`` in ``metrics.json``); a seed and a number of steps fix the
  run (``--steps N --seed S`` repeats it exactly).
"""
import argparse
import dataclasses
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import nn
from nn._checks import (check_bool, check_in_range, check_int, check_non_negative, check_pair,
                        check_positive)
from nn.engine import (LAST, Engine, ResumeError, add_training_arguments, command_errors,
                       load_checkpoint, parse_training_arguments, positive_float)
from plates.classes import IGNORE_INDEX
from plates.crops import CROP_PADDING, CROP_SIZE
from plates.reading import text_to_class_text
from plates.segmenter import build_model, class_colors, class_weights, evaluate
from plates.segmenter_data import (TARGETS, TrainPatches, augment_colors, load_crops, prepare_data,
                                   preprocess)
from plates.synthetic.generate import DECORATION_FOLDER
from segmentation.losses import segmentation_loss
from segmentation.resnet_unet import ResNetUNet
from segmentation.weights import hard_pixel_weights, separation_weights, size_weights

__all__ = ["KIND", "TrainConfig", "quick_config", "BatchStream",
           "train_digit_segmenter", "load_segmenter", "main"]

KIND = "digit-segmenter"  # the trainer's name in its checkpoints
LABEL_SAMPLES, LABEL_COVERAGE = 4, 0.5  # area vote of the labels: 4x4 sub-pixels, half covered
ENCODERS = ("unet", "resnet18")  # TrainConfig.encoder


# ============================================================================ configuration
@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint).

    Data: ``data`` (VOC root, generated when missing from ``num_images`` scenes of
    ``image_size`` px with ``data_seed``; ``data_workers`` processes render the scenes and
    read the plates), ``crop_size`` (h, w) and ``crop_padding``;
    ``targets``: what a character's label covers, ``"regions"`` (its filled hull) or
    ``"ink"`` (``plates.targets``). Model: ``encoder`` ``"unet"`` (the plain U-Net of
    ``base_channels`` and ``depth``) or ``"resnet18"`` (``segmentation.resnet_unet``: a
    ResNet-18 encoder at ``encoder_width`` times 64-512 channels, the U-Net's decoder).
    Optimization: ``steps`` of ``batch_size`` crops (None: as many as fit in
    ``minutes``, see the module docstring), Adam with ``lr`` and ``weight_decay``,
    ``warmup_steps`` then cosine decay to ``lr * final_lr_fraction``, loss
    ``CE + dice_weight · Dice`` with the character classes weighted ``char_weight`` in
    the cross entropy, the gaps between characters ``gap_weight``
    (``separation_weights``), small characters up to ``small_weight``
    (``size_weights``) and the pixels the network gets wrong up to ``1 + hard_weight``
    (``hard_pixel_weights``; 0, the default, weighs none: on the lab's plates
    ``hard_weight=10`` read no more, ``docs/results.md``), the background under the
    plates' marks that are not characters (separator dots, screws, stickers, strips,
    dealer text: ``segmenter_data.MARK_DECORATIONS``) up to ``1 + decoration_weight``
    (by the share of the pixel they cover; needs the dataset's decoration masks);
    ``prior_init`` starts the
    head's bias at the log class frequencies. ``minutes`` caps the training wall clock
    (None: no cap). Validation every ``eval_every`` steps (and a ``last.npz``
    checkpoint), plates read with ``read_plate``'s noise filter at ``read_min_area``
    pixels. Augmentation: window
    shift (fraction of the plate box), scale and ``stretch`` (the window's height alone,
    ``TrainPatches.sample``), color jitter strengths, noise.
    ``prefetch`` draws the next batch on a second thread while a step runs
    (``BatchStream``; the same numbers either way). ``tta``: the final evaluation of the
    best checkpoint averages five one-pixel shifts of each crop (``predict``; the
    validations during training take one pass, and the test split is also reported
    without shifts, ``test_single``).
    """

    data: str = "data/plates1024"
    out: str = "runs/unet"
    num_images: int = 2500
    image_size: int = 1024
    data_seed: int = 0
    data_workers: int = 2
    crop_size: tuple = CROP_SIZE
    crop_padding: float = CROP_PADDING
    targets: str = "regions"
    base_channels: int = 24
    depth: int = 4
    encoder: str = "unet"
    encoder_width: float = 0.25
    seed: int = 0
    steps: int = None
    batch_size: int = 12
    lr: float = 7.5e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    final_lr_fraction: float = 0.02
    dice_weight: float = 1.0
    char_weight: float = 2.0
    gap_weight: float = 10.0
    small_weight: float = 1.0
    hard_weight: float = 0.0
    decoration_weight: float = 10.0
    prior_init: bool = True
    minutes: float = 5.0
    eval_every: int = 100
    read_min_area: int = 1
    shift: float = 0.06
    scale: float = 0.1
    stretch: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.4
    saturation: float = 0.5
    channel_gain: float = 0.15
    noise: float = 0.05
    progress: bool = True
    prefetch: bool = True
    tta: bool = True

    def __post_init__(self):
        crop = list(self.crop_size) if isinstance(self.crop_size, np.ndarray) else self.crop_size
        self.crop_size = check_pair(crop, "crop_size", 1)  # (h, w); an int: a square
        for name in ("num_images", "image_size", "data_workers", "base_channels", "depth",
                     "batch_size", "eval_every", "read_min_area"):
            check_int(getattr(self, name), name, 1)
        if self.steps is not None:
            check_int(self.steps, "steps", 1)
        for name in ("data_seed", "seed", "warmup_steps"):
            check_int(getattr(self, name), name, 0)
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        check_positive(self.encoder_width, "encoder_width")
        multiple = 2 ** (self.depth - 1) if self.encoder == "unet" else ResNetUNet.multiple
        if self.crop_size[0] % multiple or self.crop_size[1] % multiple:
            rule = "2 ** (depth - 1)" if self.encoder == "unet" else "the ResNet-18 encoder"
            raise ValueError(f"crop_size {self.crop_size} must be divisible by {multiple} "
                             f"({rule}) for the U-Net")
        check_in_range(self.small_weight, "small_weight", low=1)
        for name in ("crop_padding", "weight_decay", "dice_weight", "char_weight", "gap_weight",
                     "hard_weight", "decoration_weight", "shift", "scale", "stretch",
                     "brightness", "contrast", "saturation", "channel_gain", "noise"):
            check_non_negative(getattr(self, name), name)
        check_positive(self.lr, "lr")
        if check_positive(self.final_lr_fraction, "final_lr_fraction") > 1:
            raise ValueError(f"final_lr_fraction must be in (0, 1], got {self.final_lr_fraction!r}")
        if self.minutes is not None:
            check_positive(self.minutes, "minutes", finite=False)
        if self.steps is None and self.minutes is None:
            raise ValueError("steps=None (fit the time budget) needs minutes")
        for name in ("progress", "prefetch", "tta"):
            check_bool(getattr(self, name), name)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Rebuild a config from ``to_dict()`` (e.g. read back from a checkpoint)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**values)


def quick_config(**overrides):
    """A configuration that trains for seconds (``--quick``, tests, tutorials): few small
    scenes, a narrow network, a few dozen steps. It checks the machinery, not accuracy."""
    values = dict(num_images=30, image_size=256, crop_size=(32, 96), base_channels=8, depth=3,
                  steps=30, batch_size=8, warmup_steps=5, eval_every=10, lr=5e-3, minutes=None)
    values.update(overrides)
    return TrainConfig(**values)


# ===================================================================================== data
class BatchStream:
    """The training batches, each drawn on a background thread while the step before runs.

    A batch is the next ``batch_size`` plates of the epoch's random order, cropped from
    randomly moved windows (``TrainPatches.sample``), color-jittered
    (``augment_colors``), standardized (``preprocess``), with its labels and the pixel
    weights of the loss (gaps, small characters, the background under the marks). Drawing it takes about a sixth of a training step (40 x 120,
    batch 12); with ``prefetch`` the next batch is drawn on a second thread while the
    network trains on this one (NumPy releases the GIL in its loops). The stream has no
    end: ``next(stream)`` starts a new epoch (a new order) when one is used up.

    Every random number comes from ``rng``, batch after batch, so prefetching changes
    no value: a run with and without it is the same. ``state_dict()`` is the data
    cursor (epoch, position in the order, the order, the generator's state) as it was
    *before* the batch being prefetched, which is what a checkpoint saves: a stream
    given that state with ``load_state_dict`` draws that batch again.

    Args:
        train_set (TrainPatches): the plates.
        config (TrainConfig): batch size, augmentation, gap and small-character weights.
        rng (numpy.random.Generator): the run's generator; the first order is drawn from it.
        prefetch (bool): draw the next batch on a background thread.
    """

    def __init__(self, train_set, config, rng, prefetch=True):
        self.train_set, self.config, self.rng = train_set, config, rng
        self.epoch, self.position, self.order = 0, 0, rng.permutation(len(train_set))
        self._executor = (ThreadPoolExecutor(1, thread_name_prefix="detseg-batches")
                          if prefetch else None)
        self._pending = None
        self._snapshot = self._cursor()

    def _cursor(self):
        return {"epoch": self.epoch, "position": self.position, "order": self.order,
                "rng": self.rng.bit_generator.state}

    def _draw(self):
        """The next batch: ``(inputs ndarray[B, h, w, 3] float32, masks ndarray[B, h, w]
        int64, pixel_weights ndarray[B, h, w] float32 or None)``."""
        config, rng = self.config, self.rng
        if self.position + config.batch_size > len(self.order):
            self.epoch += 1
            self.order, self.position = rng.permutation(len(self.train_set)), 0
        indices = self.order[self.position:self.position + config.batch_size]
        self.position += len(indices)
        marking = config.decoration_weight > 0
        drawn = self.train_set.sample(indices, rng, config.shift, config.scale, config.stretch,
                                      return_marks=marking)
        crops, masks = drawn[:2]
        images = augment_colors(crops, rng, config.brightness, config.contrast,
                                config.saturation, config.channel_gain, config.noise)
        pixel_weights = None
        if config.gap_weight != 1:
            pixel_weights = separation_weights(masks, config.gap_weight)
        if config.small_weight != 1:  # (gaps are background, small characters are not)
            small = size_weights(masks, config.small_weight)
            pixel_weights = small if pixel_weights is None else pixel_weights * small
        if marking:  # background covered by a plate's marks (a dot, a screw, a strip...)
            marks = 1 + config.decoration_weight * drawn[2] * (masks == 0)
            pixel_weights = marks if pixel_weights is None else pixel_weights * marks
        return preprocess(images), masks.astype(np.int64), pixel_weights

    def __iter__(self):
        return self

    def __next__(self):
        """The next batch (see ``_draw``); starts drawing the one after it."""
        batch = self._pending.result() if self._pending is not None else self._draw()
        self._snapshot = self._cursor()  # no draw is running: a consistent cursor
        if self._executor is not None:
            self._pending = self._executor.submit(self._draw)
        return batch

    def state_dict(self):
        """The cursor before the batch being prefetched (for a checkpoint): a dict of
        ``epoch``, ``position``, ``order`` and ``rng`` (the generator's state)."""
        return dict(self._snapshot)

    def load_state_dict(self, state):
        """Continue from a cursor saved by ``state_dict`` (checked before it is applied).

        Raises:
            ValueError: a missing entry, an order that is not a permutation of the
                plates, a position beyond it, a negative epoch or an invalid generator state.
        """
        if not isinstance(state, dict) or set(state) != {"epoch", "position", "order", "rng"}:
            raise ValueError("BatchStream state must be a dict with 'epoch', 'position', "
                             "'order' and 'rng'")
        order = np.asarray(state["order"])
        if order.dtype.kind not in "iu" or not np.array_equal(np.sort(order),
                                                              np.arange(len(self.train_set))):
            raise ValueError(f"BatchStream state: order must be a permutation of the "
                             f"{len(self.train_set)} plates")
        for name, high in (("epoch", None), ("position", len(order))):
            value = state[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < 0 or (high is not None and value > high):
                raise ValueError(f"BatchStream state: {name} must be an int in "
                                 f"[0, {high if high is not None else 'inf'}], got {value!r}")
        check = np.random.default_rng()
        try:
            check.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"BatchStream state: invalid generator state: {error}") from None
        if self._pending is not None:  # a batch drawn from the old cursor: not this run's
            self._pending.result()
            self._pending = None
        self.epoch, self.position, self.order = int(state["epoch"]), int(state["position"]), order
        self.rng.bit_generator.state = state["rng"]
        self._snapshot = self._cursor()

    def close(self):
        """Wait for the prefetch to end and stop the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor, self._pending = None, None


# =============================================================================== checkpoints
def load_segmenter(path):
    """A trained U-Net from a checkpoint of this module, in evaluation mode.

    Returns:
        tuple: ``(model, config, checkpoint)``.
    """
    checkpoint = nn.load(path)
    config = TrainConfig.from_dict(checkpoint["config"])
    model = build_model(config)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, config, checkpoint


def _saved_config(checkpoint, config):
    """The configuration a resumed run continues with: the saved one, except where the
    run directory is now and the settings that change no number (``progress``,
    ``prefetch``)."""
    try:
        saved = dict(checkpoint["config"])
        saved.update(out=config.out, progress=config.progress, prefetch=config.prefetch)
        return TrainConfig.from_dict(saved)
    except (TypeError, ValueError) as error:
        raise ResumeError(f"the checkpoint's configuration is not a digit segmenter's: "
                          f"{error}") from None


# ================================================================================= training
def train_digit_segmenter(config, resume=False):
    """Train (or resume) the digit segmenter and evaluate its best checkpoint.

    Args:
        config (TrainConfig): the run; ``config.out`` is the run directory.
        resume (bool): continue from ``out/last.npz`` (its saved configuration wins,
            except ``out``, ``progress`` and ``prefetch``).
    Returns:
        dict: what ``metrics.json`` holds — the engine's summary (``steps``,
        ``total_steps``, ``stopped_by`` "steps" or "time", ``train_seconds``: wall clock
        of the training loop, validation included, ``cpu_seconds``: CPU time of this
        process in it, all threads: on a shared machine, wall clock / CPU time shows the
        share we got, ``best_step``, the validations, the load average and the
        configuration), ``test`` and ``val`` metrics of the best checkpoint (with
        test-time shifts when ``config.tta``), ``test_single`` (the test split in one
        pass), ``data_seconds`` (rendering) and ``load_seconds`` (reading crops).
    Raises:
        nn.engine.TrainingInterrupted: Ctrl-C (``last.npz`` saved).
        nn.engine.ResumeError: ``resume`` without a ``last.npz`` of a segmenter run.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(os.path.join(config.out, LAST), KIND)
        config = _saved_config(checkpoint, config)

    data_info = prepare_data(config)
    start = time.perf_counter()
    train_set = TrainPatches(config.data, "train", config.crop_size, config.crop_padding,
                             targets=config.targets, workers=config.data_workers,
                             progress=config.progress)
    val = load_crops(config.data, "val", config.crop_size, config.crop_padding, config.targets,
                     workers=config.data_workers, progress=config.progress)
    if len(train_set) == 0 or len(val["texts"]) == 0:
        raise ValueError(f"{config.data!r} has no plates in its train or val split")
    if config.decoration_weight > 0 and not train_set.has_marks:
        warnings.warn(f"{config.data!r} has no decoration masks ({DECORATION_FOLDER}/, written "
                      f"by plates.synthetic.generate_plate_dataset): decoration_weight "
                      f"{config.decoration_weight:g} weighs nothing", stacklevel=2)
    load_seconds = time.perf_counter() - start

    model = build_model(config)
    optimizer = nn.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = nn.optim.WarmupCosine(optimizer, config.warmup_steps, config.steps,
                                     final_factor=config.final_lr_fraction, start_factor=0.05)
    # One generator drives the data order and every augmentation; the stream saves its state.
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    batches = BatchStream(train_set, config, rng, prefetch=config.prefetch)
    weights = class_weights(config)

    def loss(batch):
        inputs, masks, pixel_weights = batch
        logits = model(nn.Tensor(inputs))
        if config.hard_weight:
            hard = hard_pixel_weights(logits.data, masks, config.hard_weight, IGNORE_INDEX)
            pixel_weights = hard if pixel_weights is None else pixel_weights * hard
        return {"loss": segmentation_loss(logits, masks, dice_weight=config.dice_weight,
                                          ignore_index=IGNORE_INDEX, class_weights=weights,
                                          pixel_weights=pixel_weights)}

    def validation():
        metrics = evaluate(model, val["crops"], val["masks"], val["texts"],
                           min_area=config.read_min_area)
        return {"mean_iou": metrics["mean_iou"], "read_exact": metrics["read_exact"]}

    engine = Engine(config.out, KIND, model, optimizer, loss, batches, validation,
                    metric="mean_iou", mode="max", schedule=schedule, steps=config.steps,
                    minutes=config.minutes, eval_every=config.eval_every,
                    config=config.to_dict(), quiet=not config.progress)
    engine.fit(checkpoint)  # closes the batch stream at the end

    # --- the best checkpoint on held-out data
    best_model, _, _ = load_segmenter(engine.best_path)
    test = load_crops(config.data, "test", config.crop_size, config.crop_padding, config.targets,
                      workers=config.data_workers, progress=config.progress)
    tta = bool(config.tta)
    val_metrics = evaluate(best_model, val["crops"], val["masks"], val["texts"],
                           min_area=config.read_min_area, tta=tta)
    test_metrics = evaluate(best_model, test["crops"], test["masks"], test["texts"],
                            min_area=config.read_min_area, tta=tta)
    single = evaluate(best_model, test["crops"], test["masks"], test["texts"],
                      min_area=config.read_min_area) if tta else test_metrics
    losses = engine.history["losses"].get("loss", [])
    _plot_loss_curve(losses, engine.history["evaluations"],
                     os.path.join(config.out, "loss_curve.png"))
    _plot_predictions(test, test_metrics, os.path.join(config.out, "predictions.png"))
    strip = ("predictions", "reads")
    return engine.write_results({
        "data_seconds": round(data_info["seconds"], 2), "data_generated": data_info["generated"],
        "load_seconds": round(load_seconds, 2), "train_plates": len(train_set),
        "val": {k: v for k, v in val_metrics.items() if k not in strip},
        "test": {k: v for k, v in test_metrics.items() if k not in strip},
        "test_single": {k: v for k, v in single.items() if k not in strip},
        "final_train_loss": float(np.mean(losses[-50:])) if losses else None,
    })


# ================================================================================== figures
def _plot_loss_curve(losses, evaluations, path):
    from matplotlib.figure import Figure

    from detection.visualize import save_figure

    figure = Figure(figsize=(9, 3.5))
    ax_loss, ax_val = figure.subplots(1, 2)
    steps = np.arange(1, len(losses) + 1)
    ax_loss.plot(steps, losses, color="0.75", linewidth=0.8, label="per step")
    if len(losses) >= 20:
        window = min(50, len(losses) // 4)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1:], smooth, color="C0", label=f"mean of {window}")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("CE + Dice")
    ax_loss.set_title("training loss")
    ax_loss.legend()
    steps = [e["step"] for e in evaluations]
    ax_val.plot(steps, [e["mean_iou"] for e in evaluations], "o-", label="mean IoU (characters)")
    ax_val.plot(steps, [e["read_exact"] for e in evaluations], "s-", label="plates read exactly")
    ax_val.set_ylim(0, 1)
    ax_val.set_xlabel("step")
    ax_val.set_title("validation")
    ax_val.legend(loc="lower right")
    figure.tight_layout()
    save_figure(figure, path)


def _plot_predictions(test, metrics, path, count=12):
    from matplotlib.figure import Figure

    from detection.visualize import save_figure

    count = min(count, len(test["texts"]))
    colors = class_colors()
    figure = Figure(figsize=(9, 1.05 * count + 0.5))
    axes = figure.subplots(count, 3, squeeze=False)
    for row in range(count):
        truth = text_to_class_text(test["texts"][row])
        read = metrics["reads"][row]
        panels = (test["crops"][row], colors[test["masks"][row]],
                  colors[metrics["predictions"][row]])
        titles = (f"crop: {test['texts'][row]}", f"target: {truth}", f"read: {read}")
        for ax, image, title in zip(axes[row], panels, titles):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=8,
                         color=("green" if read == truth else "red") if ax is axes[row, 2] else "k")
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(f"test plates: mean IoU {metrics['mean_iou']:.3f}, "
                    f"read exactly {metrics['read_exact']:.1%} of {metrics['plates']}", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


# ================================================================================== command
def _build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m plates.train_segmenter",
        description="Train the digit segmenter (a U-Net from scratch) on synthetic plate crops.")
    add_training_arguments(parser, minutes=TrainConfig.minutes)
    parser.add_argument("--no-tta", action="store_true",
                        help="evaluate the best checkpoint in one pass, without test-time shifts")
    parser.add_argument("--encoder", choices=ENCODERS, default="unet",
                        help="the U-Net's encoder: its own (default) or ResNet-18")
    parser.add_argument("--encoder-width", type=positive_float, default=TrainConfig.encoder_width,
                        help="ResNet-18 encoder: width multiplier of its 64-512 channels "
                             f"(default {TrainConfig.encoder_width:g})")
    return parser


def main(argv=None):
    parser = _build_parser()
    args = parse_training_arguments(parser, argv, KIND)
    overrides = {"data": args.data, "out": args.out, "progress": not args.quiet,
                 "tta": not args.no_tta, "seed": args.seed, "steps": args.steps,
                 "minutes": args.minutes, "encoder": args.encoder,
                 "encoder_width": args.encoder_width}
    if args.quick and args.steps is None:
        del overrides["steps"]  # quick_config's own count
        overrides["minutes"] = None
    try:
        config = quick_config(**overrides) if args.quick else TrainConfig(**overrides)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    with command_errors(parser, argv, config.out):
        result = train_digit_segmenter(config, resume=args.resume)
    test = result["test"]
    print(f"trained {result['steps']} steps in {result['train_seconds']:.1f} s "
          f"(stopped by {result['stopped_by']}; data rendering {result['data_seconds']:.1f} s, "
          f"loading {result['load_seconds']:.1f} s; load average {result['load_average']})")
    print(f"test: mean IoU (characters) {test['mean_iou']:.4f}, plates read exactly "
          f"{test['read_exact']:.1%} of {test['plates']}, "
          f"pixel accuracy {test['pixel_accuracy']:.4f} (best step {result['best_step']})")
    if result["config"]["tta"]:
        single = result["test_single"]
        print(f"  (with test-time shifts; one pass: mean IoU {single['mean_iou']:.4f}, "
              f"read exactly {single['read_exact']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
