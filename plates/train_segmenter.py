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

    python -m plates.train_segmenter --data DIR --out RUN_DIR [--minutes 5] [--seed 0]
        [--steps N] [--resume] [--quick] [--no-tta]

If ``DIR`` does not exist the synthetic scenes are rendered into it first (timed
apart from training). The run directory receives ``last.npz`` (every evaluation) and
``best.npz`` (the best validation mean IoU so far): each an atomic ``nn.save`` of
the model, the optimizer, the schedule, the step, the data order and generator
state, the loss history and the configuration. ``--resume`` continues from
``last.npz``; because every random draw comes from state saved there, a resumed run
repeats the uninterrupted one exactly (``tests/segmentation/test_train.py`` checks
it bit for bit). At the end the best checkpoint is evaluated on the test split (with
test-time shifts, ``predict(..., tta=True)``, and in one pass; ``--no-tta``: one pass
only) and ``metrics.json``, ``loss_curve.png`` and ``predictions.png`` are written.

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
  colour jitter (brightness, contrast, saturation, per-channel gain) and noise.
- **Input standardization per crop** (zero mean, unit variance): plates come in
  every colour and exposure; what matters is the contrast of the glyphs.
- **Schedule:** Adam, linear warm-up then cosine decay to the last step. The number
  of steps is either given (``--steps N``) or fitted to the time budget: the warm-up
  steps (whose rates do not depend on the total) are timed, the first
  ``CALIBRATION_SKIP`` aside (first calls allocate), and at the end of the warm-up the
  total is set so that training ends within ``--minutes``. If the machine slows down
  later (other jobs on a shared machine), each validation shortens the total again so
  that the decay still ends in time, and lengthens it when the steps got faster than
  planned (so that the budget is used) — a run refitted this way is not repeated
  exactly by ``--steps N``; a run whose clock never binds is.
  The chosen total is printed and saved in the checkpoints' configuration; a seed and
  a number of steps fix the run (``--steps N --seed S`` repeats it exactly).
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

import nn
from nn.io import atomic_write_text
from plates.classes import IGNORE_INDEX
from plates.crops import CROP_PADDING, CROP_SIZE
from plates.reading import text_to_class_text
from plates.segmenter import build_model, class_colours, class_weights, evaluate
from plates.segmenter_data import (TARGETS, TrainPatches, augment_colours, load_crops,
                                   preprocess)
from segmentation.losses import segmentation_loss
from segmentation.weights import separation_weights, size_weights

__all__ = ["TrainConfig", "quick_config", "prepare_data", "BatchStream",
           "train_digit_segmenter", "load_segmenter", "main"]

CHECKPOINT_LAST, CHECKPOINT_BEST = "last.npz", "best.npz"
CALIBRATION_SKIP = 3  # warm-up steps not timed when fitting the total to the budget
TIME_MARGIN = 0.9  # fraction of the remaining budget planned (validation, noise)
LABEL_SAMPLES, LABEL_COVERAGE = 4, 0.5  # area vote of the labels: 4x4 sub-pixels, half covered


# ============================================================================ configuration
@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint).

    Data: ``data`` (VOC root, generated when missing from ``num_images`` scenes of
    ``image_size`` px with ``data_seed``; ``data_workers`` processes render the scenes and
    read the plates), ``crop_size`` (h, w) and ``crop_padding``;
    ``targets``: what a character's label covers, ``"regions"`` (its filled hull) or
    ``"ink"`` (``plates.targets``). Model: ``base_channels``, ``depth``.
    Optimization: ``steps`` of ``batch_size`` crops (None: as many as fit in
    ``minutes``, see the module docstring), Adam with ``lr`` and ``weight_decay``,
    ``warmup_steps`` then cosine decay to ``lr * final_lr_fraction``, loss
    ``CE + dice_weight · Dice`` with the character classes weighted ``char_weight`` in
    the cross entropy, the gaps between characters ``gap_weight``
    (``separation_weights``) and small characters up to ``small_weight``
    (``size_weights``); ``prior_init`` starts the head's bias at the log class
    frequencies. ``minutes`` caps the training wall clock (None: no cap). Validation
    every ``eval_every`` steps (and a ``last.npz`` checkpoint), plates read with
    ``read_plate``'s noise filter at ``read_min_area`` pixels. Augmentation: window
    shift (fraction of the plate box) and scale, colour jitter strengths, noise.
    ``prefetch`` draws the next batch on a second thread while a step runs
    (``BatchStream``; the same numbers either way). ``tta``: the final evaluation of the
    best checkpoint averages five one-pixel shifts of each crop (``predict``; the
    validations during training take one pass, and the test split is also reported
    without shifts, ``test_single``). ``stop_after`` ends the run abruptly
    after that many steps without a checkpoint, like a kill (to test ``--resume``).
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
    base_channels: int = 16
    depth: int = 3
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
    prior_init: bool = True
    minutes: float = 5.0
    eval_every: int = 100
    read_min_area: int = 1
    shift: float = 0.06
    scale: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.4
    saturation: float = 0.5
    channel_gain: float = 0.15
    noise: float = 0.05
    stop_after: int = None
    progress: bool = True
    prefetch: bool = True
    tta: bool = True

    def __post_init__(self):
        self.crop_size = tuple(int(s) for s in self.crop_size)
        positive_ints = ("num_images", "image_size", "data_workers", "base_channels", "depth",
                         "batch_size", "eval_every", "read_min_area")
        positive_ints += ("steps",) if self.steps is not None else ()
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("data_seed", "seed", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width), got {self.crop_size!r}")
        multiple = 2 ** (self.depth - 1)
        if self.crop_size[0] % multiple or self.crop_size[1] % multiple:
            raise ValueError(f"crop_size {self.crop_size} must be divisible by {multiple} "
                             f"(2 ** (depth - 1)) for the U-Net")
        small = self.small_weight
        if isinstance(small, bool) or not isinstance(small, (int, float)) \
                or not math.isfinite(small) or small < 1:
            raise ValueError(f"small_weight must be a finite number >= 1, got {small!r}")
        non_negative = ("crop_padding", "lr", "weight_decay", "dice_weight", "char_weight",
                        "gap_weight", "shift", "scale", "brightness", "contrast", "saturation",
                        "channel_gain", "noise")
        for name in non_negative:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0")
        if not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in (0, 1], got {self.final_lr_fraction!r}")
        if self.minutes is not None and (not isinstance(self.minutes, (int, float))
                                         or not self.minutes > 0):
            raise ValueError(f"minutes must be a positive number or None, got {self.minutes!r}")
        if self.steps is None and (self.minutes is None or self.warmup_steps < 1):
            raise ValueError("steps=None (fit the time budget) needs minutes and warmup_steps >= 1")
        for name in ("progress", "prefetch", "tta"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.stop_after is not None and (not isinstance(self.stop_after, int)
                                            or self.stop_after < 1):
            raise ValueError(f"stop_after must be a positive int or None, got {self.stop_after!r}")

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
def prepare_data(config):
    """Render the synthetic scenes into ``config.data`` unless a dataset is already there.

    Returns:
        dict: ``generated`` (bool) and ``seconds`` spent rendering (0 when reused).
    """
    from plates.synthetic import generate_plate_dataset

    marker = os.path.join(config.data, "ImageSets", "Main", "test.txt")
    if os.path.isfile(marker):
        return {"generated": False, "seconds": 0.0}
    start = time.perf_counter()
    generate_plate_dataset(config.data, config.num_images, config.data_seed,
                           image_size=config.image_size, workers=config.data_workers,
                           progress=config.progress)
    return {"generated": True, "seconds": time.perf_counter() - start}


class BatchStream:
    """The training batches, each drawn on a background thread while the step before runs.

    A batch is the next ``batch_size`` plates of the epoch's random order, cropped from
    randomly moved windows (``TrainPatches.sample``), colour-jittered
    (``augment_colours``), standardized (``preprocess``), with its labels and the gap
    weights of the loss. Drawing it takes about a sixth of a training step (40 x 120,
    batch 12); with ``prefetch`` the next batch is drawn on a second thread while the
    network trains on this one (NumPy releases the GIL in its loops).

    Every random number comes from ``rng``, batch after batch, so prefetching changes
    no value: a run with and without it is the same. ``data_state()`` is the data
    cursor (epoch, position in the order, the order, the generator's state) as it was
    *before* the batch being prefetched, which is what a checkpoint saves: a resumed run
    draws that batch again.

    Args:
        train_set (TrainPatches): the plates.
        config (TrainConfig): batch size, augmentation, gap and small-character weights.
        rng (numpy.random.Generator): the run's generator (its state is the cursor's).
        epoch, position (int), order (ndarray[P] int): where the cursor stands.
        prefetch (bool): draw the next batch on a background thread.
    """

    def __init__(self, train_set, config, rng, epoch, position, order, prefetch=True):
        self.train_set, self.config, self.rng = train_set, config, rng
        self.epoch, self.position, self.order = int(epoch), int(position), np.asarray(order)
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
        crops, masks = self.train_set.sample(indices, rng, config.shift, config.scale)
        images = augment_colours(crops, rng, config.brightness, config.contrast,
                                 config.saturation, config.channel_gain, config.noise)
        pixel_weights = None
        if config.gap_weight != 1:
            pixel_weights = separation_weights(masks, config.gap_weight)
        if config.small_weight != 1:  # (gaps are background, small characters are not)
            small = size_weights(masks, config.small_weight)
            pixel_weights = small if pixel_weights is None else pixel_weights * small
        return preprocess(images), masks.astype(np.int64), pixel_weights

    def next(self):
        """The next batch (see ``_draw``); starts drawing the one after it."""
        batch = self._pending.result() if self._pending is not None else self._draw()
        self._snapshot = self._cursor()  # no draw is running: a consistent cursor
        if self._executor is not None:
            self._pending = self._executor.submit(self._draw)
        return batch

    def data_state(self):
        """The cursor before the batch being prefetched (for a checkpoint): a dict of
        ``epoch``, ``position``, ``order`` and ``rng`` (the generator's state)."""
        return dict(self._snapshot)

    def close(self):
        """Wait for the prefetch to end and stop the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor, self._pending = None, None


# =============================================================================== checkpoints
def _save(path, model, optimizer, scheduler, config, state):
    nn.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "config": config.to_dict(), **state}, path)


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


def _schedule(optimizer, config):
    """Warm-up, then cosine decay to the last step (a placeholder length until calibrated)."""
    total = config.steps if config.steps is not None else config.warmup_steps + 1
    cosine = nn.optim.CosineAnnealingLR(optimizer, T_max=max(total - config.warmup_steps, 1),
                                        eta_min=config.lr * config.final_lr_fraction)
    return nn.optim.LinearWarmup(optimizer, config.warmup_steps, start_factor=0.05, after=cosine)


def _fit_steps(config, done, seconds, timed, timed_seconds):
    """Total steps that fit the time budget: ``done`` steps took ``seconds`` so far, of
    which the last ``timed`` took ``timed_seconds`` (the speed estimate)."""
    per_step = timed_seconds / max(timed, 1)
    remaining = 60 * config.minutes - seconds
    return max(done + 1, done + int(TIME_MARGIN * remaining / per_step))


def _refit_steps(total, step, elapsed, budget, seconds_per_step):
    """The total steps refitted to the time left: shortened if the ``total - step`` left
    would end after ``budget`` seconds at ``seconds_per_step``, lengthened if they would
    end before ``TIME_MARGIN`` of it (planning ``TIME_MARGIN`` of the time left)."""
    left = max(budget - elapsed, 0)
    needed = (total - step) * seconds_per_step
    if TIME_MARGIN * left <= needed <= left:
        return total
    return max(step + 1, step + int(TIME_MARGIN * left / seconds_per_step))


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


# ================================================================================= training
def train_digit_segmenter(config, resume=False):
    """Train (or resume) the digit segmenter and evaluate its best checkpoint.

    Args:
        config (TrainConfig): the run; ``config.out`` is the run directory.
        resume (bool): continue from ``out/last.npz`` (its saved configuration wins,
            except ``minutes``, ``stop_after``, ``progress``, ``prefetch`` and ``tta``).
    Returns:
        dict: what ``metrics.json`` holds — ``test`` and ``val`` metrics of the best
        checkpoint (with test-time shifts when ``config.tta``), ``test_single`` (the test
        split in one pass), ``best_step``, ``steps_done``, ``train_seconds`` (wall clock of the
        training loop, validation included) and ``train_cpu_seconds`` (CPU time of this
        process in it, all threads: on a shared machine, wall clock / CPU time shows the
        share we got), ``data_seconds`` (rendering) and
        ``load_seconds`` (reading crops), ``stopped_by`` ("steps", "time" or
        "interrupt"), the machine's load average and the configuration.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    os.makedirs(config.out, exist_ok=True)
    last_path = os.path.join(config.out, CHECKPOINT_LAST)
    checkpoint = None
    if resume:
        if not os.path.isfile(last_path):
            raise FileNotFoundError(f"--resume: no checkpoint {last_path!r} to resume from")
        checkpoint = nn.load(last_path)
        saved = dict(checkpoint["config"])
        saved.update(minutes=config.minutes, stop_after=config.stop_after,
                     progress=config.progress, prefetch=config.prefetch, tta=config.tta,
                     out=config.out)
        config = TrainConfig.from_dict(saved)

    data_info = prepare_data(config)
    start = time.perf_counter()
    train_set = TrainPatches(config.data, "train", config.crop_size, config.crop_padding,
                             targets=config.targets, workers=config.data_workers,
                             progress=config.progress)
    val = load_crops(config.data, "val", config.crop_size, config.crop_padding, config.targets,
                     workers=config.data_workers, progress=config.progress)
    if len(train_set) == 0 or len(val["texts"]) == 0:
        raise ValueError(f"{config.data!r} has no plates in its train or val split")
    load_seconds = time.perf_counter() - start

    model = build_model(config)
    model.train()
    optimizer = nn.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _schedule(optimizer, config)
    # One generator drives the data order and every augmentation; its state is saved.
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    state = {"step": 0, "epoch": 0, "position": 0, "order": rng.permutation(len(train_set)),
             "rng": rng.bit_generator.state, "losses": np.zeros(0, np.float32),
             "val_steps": np.zeros(0, np.int64), "val_iou": np.zeros(0, np.float64),
             "val_read": np.zeros(0, np.float64), "val_seconds": np.zeros(0, np.float64),
             "best_iou": -1.0, "best_step": -1,
             "train_seconds": 0.0, "cpu_seconds": 0.0, "auto_steps": config.steps is None,
             "refits": 0}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = {key: checkpoint[key] for key in state}
        rng.bit_generator.state = state["rng"]
    losses = list(np.asarray(state["losses"], np.float32))

    weights = class_weights(config)
    stopped_by = "steps"
    clock, cpu_clock = time.perf_counter(), time.process_time()
    elapsed_before, cpu_before = float(state["train_seconds"]), float(state["cpu_seconds"])
    last_validation = [0.0]  # seconds the last validation + checkpoints took

    def validate_and_save(step):
        """Validation, ``last.npz`` always, ``best.npz`` when the mean IoU improved."""
        started = time.perf_counter()
        metrics = evaluate(model, val["crops"], val["masks"], val["texts"],
                           min_area=config.read_min_area)
        state["val_steps"] = np.append(state["val_steps"], step)
        state["val_iou"] = np.append(state["val_iou"], metrics["mean_iou"])
        state["val_read"] = np.append(state["val_read"], metrics["read_exact"])
        state["val_seconds"] = np.append(state["val_seconds"],
                                         elapsed_before + time.perf_counter() - clock)
        state.update(step=step, losses=np.asarray(losses, np.float32),
                     train_seconds=elapsed_before + time.perf_counter() - clock,
                     cpu_seconds=cpu_before + time.process_time() - cpu_clock,
                     **batches.data_state())
        if metrics["mean_iou"] > float(state["best_iou"]):
            state.update(best_iou=metrics["mean_iou"], best_step=step)
            _save(os.path.join(config.out, CHECKPOINT_BEST), model, optimizer, scheduler,
                  config, state)
        _save(last_path, model, optimizer, scheduler, config, state)
        last_validation[0] = time.perf_counter() - started
        bar.write(f"step {step}: loss {np.mean(losses[-config.eval_every:]):.4f}, "
                  f"val mean IoU {metrics['mean_iou']:.4f}, read {metrics['read_exact']:.3f}")

    def refit_schedule(step, seconds_per_step):
        """Refit a fitted schedule to the time left (the machine got slower or faster)."""
        nonlocal config
        elapsed = elapsed_before + time.perf_counter() - clock
        # The validations still to come share the budget (one per eval_every steps), and
        # one more is kept in reserve: the final one.
        per_step = seconds_per_step + last_validation[0] / config.eval_every
        budget = 60 * config.minutes - last_validation[0]
        total = _refit_steps(config.steps, step, elapsed, budget, per_step)
        if total != config.steps:
            change = "shortened" if total < config.steps else "lengthened"
            config = dataclasses.replace(config, steps=total)
            scheduler.after.T_max = max(total - config.warmup_steps, 1)
            bar.total = total
            state["refits"] = int(state["refits"]) + 1
            bar.write(f"step {step}: {seconds_per_step:.2f} s per step, {change} to {total} steps")

    batches = BatchStream(train_set, config, rng, state["epoch"], state["position"],
                          state["order"], prefetch=config.prefetch)
    calibrate = config.warmup_steps  # fit the total when the warm-up ends
    skip = CALIBRATION_SKIP if calibrate > CALIBRATION_SKIP else 0
    timer_start, timed_from = clock, int(state["step"])
    bar = tqdm(total=config.steps, initial=int(state["step"]), desc="train", unit="step",
               disable=not config.progress, dynamic_ncols=True)
    step = int(state["step"])
    try:  # the prefetch thread and the bar end with the loop, also on an error or Ctrl-C
        while config.steps is None or step < config.steps:
            if config.steps is None and step == skip:
                timer_start, timed_from = time.perf_counter(), step
            if config.steps is None and step == calibrate:
                # Fit the total to the budget; the warm-up so far did not depend on it.
                now = time.perf_counter()
                config = dataclasses.replace(config, steps=_fit_steps(
                    config, step, elapsed_before + now - clock, step - timed_from,
                    now - timer_start))
                scheduler.after.T_max = max(config.steps - config.warmup_steps, 1)
                bar.total = config.steps
                bar.write(f"steps {skip + 1}..{step} took {now - timer_start:.1f} s: "
                          f"training for {config.steps} steps (--steps {config.steps})")
            # Stop when the final validation would no longer end within the budget (with
            # room for it to take longer than the last one did).
            if config.minutes is not None and elapsed_before + time.perf_counter() - clock \
                    + 1.5 * last_validation[0] > 60 * config.minutes:
                stopped_by = "time"
                if int(state["step"]) != step:  # validate and keep the steps done since the last
                    validate_and_save(step)
                break
            # --- a batch (drawn while the last step ran), then one optimization step
            inputs, masks, pixel_weights = batches.next()
            logits = model(nn.Tensor(inputs))
            loss = segmentation_loss(logits, masks, dice_weight=config.dice_weight,
                                     ignore_index=IGNORE_INDEX, class_weights=weights,
                                     pixel_weights=pixel_weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}",
                            best_miou=f"{max(float(state['best_iou']), 0):.3f}")
            if config.stop_after is not None and step >= config.stop_after \
                    and (config.steps is None or step < config.steps):
                stopped_by = "interrupt"  # a simulated kill: nothing saved since the last check
                break
            if step % config.eval_every == 0 or step == config.steps:  # (None: no last step yet)
                now = time.perf_counter()
                if bool(state["auto_steps"]) and config.steps is not None and step > calibrate:
                    refit_schedule(step, (now - timer_start) / max(step - timed_from, 1))
                validate_and_save(step)
                timer_start, timed_from = time.perf_counter(), step  # speed since this validation
    finally:
        bar.close()
        batches.close()
    train_seconds = elapsed_before + time.perf_counter() - clock
    cpu_seconds = cpu_before + time.process_time() - cpu_clock

    result = {
        "stopped_by": stopped_by, "steps_done": step, "train_seconds": round(train_seconds, 2),
        "train_cpu_seconds": round(cpu_seconds, 2), "schedule_refits": int(state["refits"]),
        "data_seconds": round(data_info["seconds"], 2), "data_generated": data_info["generated"],
        "load_seconds": round(load_seconds, 2), "load_average": _load_average(),
        "train_plates": len(train_set), "config": config.to_dict(),
    }
    if stopped_by == "interrupt":
        return result
    if int(state["best_step"]) < 0:  # stopped by time before the first evaluation
        state.update(step=step, losses=np.asarray(losses, np.float32),
                     train_seconds=train_seconds, cpu_seconds=cpu_seconds, **batches.data_state())
        metrics = evaluate(model, val["crops"], val["masks"], val["texts"],
                           min_area=config.read_min_area)
        state.update(best_iou=metrics["mean_iou"], best_step=step)
        _save(os.path.join(config.out, CHECKPOINT_BEST), model, optimizer, scheduler, config, state)
        _save(last_path, model, optimizer, scheduler, config, state)

    # --- the best checkpoint on held-out data
    best_model, _, best = load_segmenter(os.path.join(config.out, CHECKPOINT_BEST))
    test = load_crops(config.data, "test", config.crop_size, config.crop_padding, config.targets,
                      workers=config.data_workers, progress=config.progress)
    tta = bool(config.tta)
    val_metrics = evaluate(best_model, val["crops"], val["masks"], val["texts"],
                           min_area=config.read_min_area, tta=tta)
    test_metrics = evaluate(best_model, test["crops"], test["masks"], test["texts"],
                            min_area=config.read_min_area, tta=tta)
    single = evaluate(best_model, test["crops"], test["masks"], test["texts"],
                      min_area=config.read_min_area) if tta else test_metrics
    _plot_loss_curve(losses, state, os.path.join(config.out, "loss_curve.png"))
    _plot_predictions(test, test_metrics, os.path.join(config.out, "predictions.png"))
    strip = ("predictions", "reads")
    result.update(
        best_step=int(best["best_step"]),
        val={k: v for k, v in val_metrics.items() if k not in strip},
        test={k: v for k, v in test_metrics.items() if k not in strip},
        test_single={k: v for k, v in single.items() if k not in strip},
        final_train_loss=float(np.mean(losses[-50:])) if losses else None,
    )
    atomic_write_text(os.path.join(config.out, "metrics.json"),
                      json.dumps(_json_safe(result), indent=2) + "\n")
    return result


def _json_safe(value):
    """NaN -> None (JSON has no NaN), NumPy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# ================================================================================== figures
def _plot_loss_curve(losses, state, path):
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
    ax_val.plot(state["val_steps"], state["val_iou"], "o-", label="mean IoU (characters)")
    ax_val.plot(state["val_steps"], state["val_read"], "s-", label="plates read exactly")
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
    colours = class_colours()
    figure = Figure(figsize=(9, 1.05 * count + 0.5))
    axes = figure.subplots(count, 3, squeeze=False)
    for row in range(count):
        truth = text_to_class_text(test["texts"][row])
        read = metrics["reads"][row]
        panels = (test["crops"][row], colours[test["masks"][row]],
                  colours[metrics["predictions"][row]])
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
    parser.add_argument("--data", required=True,
                        help="VOC dataset root; rendered there first if it does not exist")
    parser.add_argument("--out", required=True,
                        help="run directory (checkpoints, figures, metrics)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock limit of training (default 5; 0 = none)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the run (default 0)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimization steps (default: as many as fit in --minutes)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.npz")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data and network, seconds: checks the machinery, not accuracy")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-tta", action="store_true",
                        help="evaluate the best checkpoint in one pass, without test-time shifts")
    return parser


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    overrides = {"data": args.data, "out": args.out, "progress": not args.quiet,
                 "tta": not args.no_tta}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.minutes is not None:
        overrides["minutes"] = None if args.minutes == 0 else args.minutes
    try:
        config = quick_config(**overrides) if args.quick else TrainConfig(**overrides)
        result = train_digit_segmenter(config, resume=args.resume)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        last = os.path.join(args.out, CHECKPOINT_LAST)
        print(f"\ninterrupted: continue with --resume (from {last})", file=sys.stderr)
        return 130
    if result["stopped_by"] == "interrupt":
        print(f"stopped after {result['steps_done']} steps (stop_after)")
        return 0
    test = result["test"]
    print(f"trained {result['steps_done']} steps in {result['train_seconds']:.1f} s "
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
