"""The lab's extra: both stages against ResNet-18, ``python -m plates compare --run RUN_DIR``.

    python -m plates compare --run RUN_DIR [--minutes M] [--steps N] [--quick] [--resume]
        [--tasks detector segmenter] [--detector-width 0.5] [--segmenter-width 0.25]
        [--threads T] [--quiet]
    python -m plates compare --run RUN_DIR --markdown     # the table of comparison.json

Labwork 7 ends with "a comparison with ResNet19 if you are fast enough". No ResNet-19
exists; the comparison is with ResNet-18, the smallest ImageNet ResNet of He, Zhang,
Ren and Sun (2016). Each stage of a lab run (``python -m plates run``) is trained again
with a ResNet-18 network, on the run's own data, everything else equal:

- **detector**: RetinaNet with the lab's small backbone (``resnet_small``: a 3x3 stem,
  one basic block per stage, 16-128 channels) against the ResNet-18 layout
  (``detection.backbones.resnet18``: 7x7/2 stem and max-pool, two basic blocks per
  stage, 64-512 channels times ``--detector-width``, default 0.5, as
  ``docs/retinanet_backbones.md`` chose); the same FPN, heads, anchors and recipe, on
  the detector's small copy of the scenes (``LabConfig.small_scenes``);
- **segmenter**: the lab's U-Net against the U-Net with a ResNet-18 encoder
  (``segmentation.resnet_unet``, channels times ``--segmenter-width``, default 0.25:
  16, 32, 64, 128, the plain U-Net's 16, 32, 64 and a fourth level; wider costs too
  much here: x0.5 makes a training step about 6x the U-Net's); the same loss, recipe and
  plate crops of the full frames (``LabConfig.scenes``).

Each pair is trained twice:

1. **the same time budget** (``time``): the lab's training minutes split between the
   stages as the lab splits them, or ``--minutes M`` (split the same way); the engine
   fits each schedule to the budget, so the slower network takes fewer steps;
2. **the same number of steps** (``steps``): the steps the small network took in (1),
   or ``--steps N``; no time cap, so the ResNet runs longer.

**Reuse.** A run is trained only when no finished run has its configuration. The lab's
own detector and segmenter (``RUN_DIR/detector``, ``RUN_DIR/segmenter``) are the small
networks' time runs when their saved configuration equals the one asked for (same
budget, data, seed, recipe: always, unless ``--minutes`` changes the budget). A run
that ended at its ``N``-th step with its schedule done (``stopped_by == "steps"``: its
cosine decay ended at step ``N``, as a ``--steps N`` run's does) also stands for the
``N``-step run of the same configuration. So by default the small networks are the
lab's and only the two ResNet-18 networks train, each twice. A row says whether it
was reused and from where (``source``).

**Measurements.** Accuracy of each row's best checkpoint on the held-out test scenes:
detector, COCO mAP and AP50 per class on the small copy's test split
(``train_retinanet.evaluate``, the detector alone); segmenter, the trainer's own test
figures on crops of the true plate boxes, mean IoU over the character classes and
plates read exactly (with its test-time shifts when the configuration has them, and
in one pass). Cost: parameters counted on the models; the median time of a training
step (the trainer's step on its batches: forward, loss, backward, gradient clipping
for the detector, optimizer step) and of inference (detector: ``predict`` on one test
image, postprocessing included; segmenter: ``predict`` on a batch of
``INFERENCE_CROPS`` crops, one pass), each timed alone with the two networks
alternating call by call in one process, so both see the same load of the machine.

**Files.** ``RUN_DIR/comparison.json`` (``KIND``, written atomically after every
finished row, ``complete`` at the end; ``python -m plates report`` turns it into a
table and a summary, ``summarize``); the training runs in
``RUN_DIR/comparison/<task>_<model>_<budget>/``; the state in
``RUN_DIR/comparison/compare.json``. ``--resume`` continues with the saved settings:
finished rows are kept, an interrupted training continues from its ``last.npz``;
``--tasks`` with ``--resume`` adds stages.
``--quick`` takes the lab's ``--quick`` trainer settings (a few steps of tiny
networks) and few timing repeats: seconds, for tests; it checks the machinery, not
accuracy.

Duration of the default comparison of a default lab run (19.5 minutes: detector 9,
segmenter 10.5): the ResNet-18 detector trains 9 minutes, then as many steps as the
small one took (about 2.2x its 9 minutes), the ResNet-18 U-Net 10.5 minutes, then the
U-Net's steps (about as long: the two networks' steps cost about the same), plus
loading, evaluation and timing: about 54 minutes on the 2-core machine, 65 when the
lab's U-Net stopped by the clock before its schedule ended (it is then trained again
for the step pair), as in the run of ``docs/results.md``.
``--tasks detector`` then ``--resume --tasks segmenter`` runs one stage at a time.
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

import nn
from detection import train_retinanet
from detection.datasets.collate import collate_detection
from detection.datasets.voc import VOCDataset
from nn.io import read_json, write_json
from nn.optim.clip_grad import clip_grad_norm_
from plates.lab import LAB_FILE, QUICK, LabConfig, machine_info
from plates.reader import DETECTOR_DIR, SEGMENTER_DIR
from plates.report import COMPARISON_FILE
from plates.train_detector import detector_train_config

__all__ = ["KIND", "COMPARISON_DIR", "STATE_FILE", "TASKS", "MODELS", "BUDGETS",
           "DETECTOR_WIDTH", "SEGMENTER_WIDTH", "INFERENCE_CROPS", "CompareConfig",
           "lab_train_configs", "run_config", "compare", "budget_text", "summarize",
           "markdown_table", "build_parser", "main"]

KIND, FORMAT = "plates-compare", 1  # comparison.json's "kind" and "format"
COMPARISON_DIR, STATE_FILE = "comparison", "compare.json"
TASKS = ("detector", "segmenter")
MODELS = {"detector": ("small", "resnet18"), "segmenter": ("unet", "resnet18")}
BUDGETS = ("time", "steps")
DETECTOR_WIDTH, SEGMENTER_WIDTH = 0.5, 0.25
INFERENCE_CROPS = 8  # crops per segmenter inference batch
TIMING = {"warmup": 2, "repeats": 9, "inference": 20}  # calls per network
QUICK_TIMING = {"warmup": 1, "repeats": 2, "inference": 3}
# Settings that change no number of a run: ignored when looking for a run to reuse.
_IGNORED = ("out", "data", "progress", "prefetch", "data_workers")


# ============================================================================ configuration
@dataclasses.dataclass
class CompareConfig:
    """What a comparison depends on (saved in ``comparison/compare.json``).

    Attributes:
        run (str): the lab run directory.
        minutes (float | None): training minutes of both stages' time runs, split as the
            lab splits them; None: the lab's.
        steps (int | None): steps of both stages' step runs; None: the steps the small
            network of each stage took in its time run.
        tasks (tuple of str): ``"detector"`` and/or ``"segmenter"``.
        detector_width (float): ResNet-18 backbone width multiplier.
        segmenter_width (float): ResNet-18 encoder width multiplier.
        quick (bool): the lab's ``--quick`` trainer settings and few timing repeats.
        progress (bool): progress bars.
    """

    run: str
    minutes: float = None
    steps: int = None
    tasks: tuple = TASKS
    detector_width: float = DETECTOR_WIDTH
    segmenter_width: float = SEGMENTER_WIDTH
    quick: bool = False
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.run, (str, os.PathLike)) or not os.fspath(self.run):
            raise ValueError(f"run must be a directory path, got {self.run!r}")
        self.run = os.fspath(self.run)
        if self.minutes is not None and (isinstance(self.minutes, bool)
                                         or not isinstance(self.minutes, (int, float))
                                         or not math.isfinite(self.minutes)
                                         or self.minutes <= 0):
            raise ValueError(f"minutes must be a positive number or None, got {self.minutes!r}")
        if self.steps is not None and (isinstance(self.steps, bool)
                                       or not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be a positive int or None, got {self.steps!r}")
        self.tasks = tuple(self.tasks)
        if not self.tasks or any(t not in TASKS for t in self.tasks) \
                or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names among {TASKS}, got {self.tasks!r}")
        self.tasks = tuple(t for t in TASKS if t in self.tasks)
        for name in ("detector_width", "segmenter_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("quick", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self):
        return dataclasses.asdict(self)


def lab_train_configs(lab, quick=False, progress=True):
    """The two stages' trainer configurations of a lab run, built as ``plates.lab`` builds
    them (the small networks, the lab's budget).

    Args:
        lab (LabConfig): the run.
        quick (bool): the lab's ``--quick`` settings even if the run was not quick.
        progress (bool): progress bars of the trainers.
    Returns:
        dict: ``detector`` (``detection.train_retinanet.TrainConfig``, with the
        ``--quick`` settings applied when quick) and ``segmenter``
        (``plates.train_segmenter.TrainConfig``).
    """
    from plates.train_segmenter import TrainConfig, quick_config

    quick = quick or lab.quick
    fields = dict(minutes=lab.minutes * lab.detector_share, seed=lab.seed,
                  image_size=lab.detector_size, progress=progress)
    if quick:
        fields.update(quick=True, steps=QUICK["detector_steps"])
    detector = detector_train_config(lab.small_scenes, os.path.join(lab.out, DETECTOR_DIR),
                                     **fields)
    fields = dict(data=lab.scenes, out=os.path.join(lab.out, SEGMENTER_DIR),
                  num_images=lab.num_images, image_size=lab.image_size, data_seed=lab.seed,
                  seed=lab.seed, data_workers=lab.workers, progress=progress)
    if quick:
        segmenter = quick_config(steps=QUICK["segmenter_steps"], **fields)
    else:
        segmenter = TrainConfig(minutes=lab.minutes * (1 - lab.detector_share), **fields)
    return {"detector": _effective("detector", detector), "segmenter": segmenter}


def _effective(task, config):
    """The detector trainer applies its ``--quick`` settings itself; applied here too
    (they are idempotent) so that the configuration is the one saved in the run."""
    if task == "detector" and config.quick:
        return train_retinanet._quick(config)
    return config


def run_config(task, base, model, budget, width, minutes=None, steps=None, out=None):
    """The trainer configuration of one row.

    Args:
        task (str): ``"detector"`` or ``"segmenter"``.
        base: the lab's configuration of that stage (``lab_train_configs``).
        model (str): ``MODELS[task]``; ``"resnet18"`` swaps in the ResNet-18 network of
            width ``width``.
        budget (str): ``"time"`` (``minutes``, or the lab's when None) or ``"steps"``
            (exactly ``steps``, no time cap).
        out (str, optional): the run directory.
    """
    if model not in MODELS[task]:
        raise ValueError(f"model must be one of {MODELS[task]} for the {task}, got {model!r}")
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    changes = {} if out is None else {"out": os.fspath(out)}
    if model == "resnet18" and task == "detector":
        changes.update(backbone="resnet18", model={**base.model, "width_multiplier": width})
    elif model == "resnet18":
        changes.update(encoder="resnet18", encoder_width=width)
    if budget == "time" and minutes is not None:
        changes["minutes"] = minutes
    if budget == "steps":
        if steps is None:
            raise ValueError("a steps budget needs steps")
        changes.update(steps=steps, minutes=None)
    return _effective(task, dataclasses.replace(base, **changes))


def _normalized(task, values):
    """A configuration (object or saved dict) as a plain dict without ``_IGNORED``;
    None when it is no configuration of the task's trainer."""
    from plates.train_segmenter import TrainConfig

    try:
        if isinstance(values, dict):
            values = (train_retinanet.TrainConfig(**values).validate() if task == "detector"
                      else TrainConfig.from_dict(values))
        plain = json.loads(json.dumps(dataclasses.asdict(values)))
    except (TypeError, ValueError):
        return None
    return {key: value for key, value in plain.items() if key not in _IGNORED}


def _reusable(task, desired, metrics):
    """Whether a finished run (its ``metrics.json``) is the run ``desired`` asks for."""
    saved = _normalized(task, metrics.get("config"))
    wanted = _normalized(task, desired)
    if saved is None:
        return False
    if saved == wanted:
        return True
    # A run whose schedule ended at its N-th step stands for the N-step run.
    if desired.minutes is not None or desired.steps is None:
        return False
    rest = [{k: v for k, v in d.items() if k not in ("minutes", "steps")} for d in (saved, wanted)]
    return (rest[0] == rest[1] and metrics.get("stopped_by") == "steps"
            and metrics.get("steps") == desired.steps == metrics.get("total_steps"))


# =================================================================================== helpers
def _count(model):
    return int(sum(p.data.size for p in model.parameters()))


def _has_splits(root):
    return os.path.isfile(os.path.join(root, "ImageSets", "Main", "test.txt"))


def _label(task, model, config):
    if task == "detector":
        if model == "small":
            return "RetinaNet, small backbone"
        return f"RetinaNet, ResNet-18 x{config.model['width_multiplier']:g}"
    if model == "unet":
        return f"U-Net (base {config.base_channels}, depth {config.depth})"
    return f"U-Net, ResNet-18 encoder x{config.encoder_width:g}"


def _row_key(task, model, budget):
    return f"{task}/{model}/{budget}"


def _cycle(iterable_factory, count):
    """The first ``count`` items of an iterable restarted whenever it ends (epochs)."""
    items = []
    while len(items) < count:
        before = len(items)
        for item in iterable_factory():
            items.append(item)
            if len(items) == count:
                break
        if len(items) == before:
            raise ValueError("no batch to time (an empty dataset?)")
    return items


def _alternate(calls, inputs, warmup, bar):
    """Milliseconds of each call on each input, the calls alternating input by input (the
    order reversed every other input); the first ``warmup`` inputs are not kept.

    Args:
        calls (dict): name -> ``f(input)``.
        inputs (list): the same inputs for every call.
    Returns:
        dict: name -> list of milliseconds.
    """
    times = {name: [] for name in calls}
    names = list(calls)
    for i, item in enumerate(inputs):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name](item)
            elapsed = 1000 * (time.perf_counter() - start)
            if i >= warmup:
                times[name].append(elapsed)
            bar.update(1)
    return times


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# =============================================================================== the work
class _Comparison:
    """One session of a comparison: the lab's configuration, the state, the rows."""

    def __init__(self, config, lab, state):
        self.config, self.lab, self.state = config, lab, state
        self.base = lab_train_configs(lab, quick=config.quick, progress=config.progress)
        self.dir = os.path.join(config.run, COMPARISON_DIR)
        self.timing = QUICK_TIMING if config.quick or lab.quick else TIMING

    # ---------------------------------------------------------------------- bookkeeping
    def _say(self, text):
        if self.config.progress:
            print(text, flush=True)

    def save(self):
        write_json(os.path.join(self.dir, STATE_FILE), self.state)
        document = self.document()
        write_json(os.path.join(self.config.run, COMPARISON_FILE), document)
        return document

    def _minutes(self, task):
        """The time budget of a stage: ``--minutes`` split as the lab splits it, or the lab's."""
        if self.config.minutes is None:
            return None
        share = self.lab.detector_share
        return self.config.minutes * (share if task == "detector" else 1 - share)

    def _width(self, task):
        return self.config.detector_width if task == "detector" else self.config.segmenter_width

    def plan(self, task, model, budget):
        """The configuration of a row (its run directory under ``comparison/``)."""
        steps = None
        if budget == "steps":
            steps = self.state["steps"].get(task)
        return run_config(task, self.base[task], model, budget, self._width(task),
                          minutes=self._minutes(task), steps=steps,
                          out=os.path.join(self.dir, f"{task}_{model}_{budget}"))

    # ------------------------------------------------------------------------- the rows
    def _candidates(self, task):
        """Finished runs of a stage: the lab's, then the comparison's."""
        folders = [DETECTOR_DIR if task == "detector" else SEGMENTER_DIR]
        if os.path.isdir(self.dir):
            folders += [os.path.join(COMPARISON_DIR, name) for name in sorted(os.listdir(self.dir))
                        if name.startswith(task + "_")]
        for folder in folders:
            path = os.path.join(self.config.run, folder)
            metrics = read_json(os.path.join(path, "metrics.json"))
            if metrics is not None and os.path.isfile(os.path.join(path, "best.npz")):
                yield folder, metrics

    def row(self, task, model, budget, number, total):
        """Train (or find) the run of a row, evaluate it, record it."""
        key = _row_key(task, model, budget)
        if budget == "steps" and self.state["steps"].get(task) is None:
            small = self.state["rows"][_row_key(task, MODELS[task][0], "time")]
            self.state["steps"][task] = self.config.steps or small["steps"]
        config = self.plan(task, model, budget)
        label = _label(task, model, config)
        if budget == "steps":
            what = f"same steps ({config.steps})"
        elif config.minutes is not None:
            what = f"same time ({config.minutes:.2f} min)"
        else:
            what = f"same budget ({config.steps} steps, the lab's)"
        if key in self.state["rows"]:
            self._say(f"[{number}/{total}] {task}: {label}, {what}: done before, skipped")
            return
        own = os.path.relpath(config.out, self.config.run)
        source = next((folder for folder, metrics in self._candidates(task)
                       if _reusable(task, config, metrics)), None)
        if source is None:
            self._say(f"[{number}/{total}] {task}: {label}, {what}: training")
            self.save()
            resume = os.path.isfile(os.path.join(config.out, "last.npz"))
            if task == "detector":
                train_retinanet.train_retinanet(config, resume=resume)
            else:
                from plates.train_segmenter import train_digit_segmenter

                train_digit_segmenter(config, resume=resume)
            source = own
        else:
            self._say(f"[{number}/{total}] {task}: {label}, {what}: the run in "
                      f"{source} has this configuration, reused")
        path = os.path.join(self.config.run, source)
        metrics = read_json(os.path.join(path, "metrics.json"))
        row = {"task": task, "model": model, "label": label, "budget": budget,
               "minutes": config.minutes if budget == "time" else None,
               "budget_steps": config.steps if budget == "steps" else None,
               "source": source, "reused": source != own,
               "steps": metrics["steps"], "total_steps": metrics["total_steps"],
               "stopped_by": metrics["stopped_by"], "train_seconds": metrics["train_seconds"],
               "best_step": metrics["best_step"], "load_average": metrics.get("load_average")}
        if task == "detector":
            row.update(self._detector_test(config, path, metrics))
        else:
            row.update(self._segmenter_test(path, metrics))
        self.state["rows"][key] = row
        self.save()
        result = row["test"]
        figures = (f"test mAP {_fmt(result['map'])}" if task == "detector" else
                   f"test mean IoU {_fmt(result['mean_iou'])}, read "
                   f"{_fmt(result['read_exact'], '.1%')}")
        self._say(f"    {row['steps']} steps in {row['train_seconds'] / 60:.1f} min, {figures}")

    def _detector_test(self, config, path, metrics):
        """The best checkpoint on the test split of the detector's copy."""
        model, _ = train_retinanet.load_run(os.path.join(path, "best.npz"))
        test_set = self._detector_test_set(config)
        evaluation = train_retinanet.evaluate(model, test_set, config.batch_size)["metrics"]
        keep = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100",
                "map_per_class", "ap50_per_class")
        test = {key: evaluation[key] for key in keep}
        test["images"] = len(test_set)
        return {"parameters": _count(model), "epochs": metrics.get("epochs"), "test": test}

    @staticmethod
    def _detector_test_set(config):
        # The evaluation transforms of the trainer's val split (resize, normalize).
        _, val = train_retinanet.build_datasets(config, np.random.default_rng(0))
        return VOCDataset(config.data, "test", classes=train_retinanet.class_names(config),
                          transforms=val.dataset.transforms)

    @staticmethod
    def _segmenter_test(path, metrics):
        """The trainer's test figures of the best checkpoint."""
        from plates.train_segmenter import load_segmenter

        model, config, _ = load_segmenter(os.path.join(path, "best.npz"))
        keep = ("mean_iou", "read_exact", "pixel_accuracy", "plates")
        test = {key: metrics["test"][key] for key in keep}
        test["tta"] = bool(config.tta)
        single = metrics.get("test_single") or metrics["test"]
        return {"parameters": _count(model),
                "test": test, "test_single": {key: single[key] for key in keep}}

    # ----------------------------------------------------------------------- the timing
    def measure(self, task, number, total):
        """Median training-step and inference times of the two networks of a stage."""
        if task in self.state["timing"]:
            self._say(f"[{number}/{total}] {task}: timing done before, skipped")
            return
        self._say(f"[{number}/{total}] {task}: timing the two networks, alternating")
        rows = {model: self.state["rows"][_row_key(task, model, "time")] for model in MODELS[task]}
        paths = {model: os.path.join(self.config.run, row["source"], "best.npz")
                 for model, row in rows.items()}
        if task == "detector":
            timing = self._time_detectors(paths)
        else:
            timing = self._time_segmenters(paths)
        timing.update(warmup=self.timing["warmup"], threads=nn.get_num_threads(),
                      load_average=_load_average())
        self.state["timing"][task] = timing
        self.save()
        self._say("    " + ", ".join(f"{model}: step {timing['step_ms'][model]:.0f} ms, "
                                     f"inference {timing['inference_ms'][model]:.0f} ms"
                                     for model in MODELS[task]))

    def _bar(self, calls, count, task):
        return tqdm(total=len(calls) * count, desc=f"timing {task}", unit="call",
                    disable=not self.config.progress)

    def _time_training(self, models, configs, trainer_step, batches, task, inference,
                       **settings):
        """Time the training steps of the networks, alternating, and gather the timing.

        Args:
            models, configs (dict): the networks and their training configurations, by name.
            trainer_step (callable): ``(model, config) -> step(batch)``, one training step.
            batches (list): the warm-up and timed batches.
            task (str): what the progress bar says.
            inference (dict): the inference times (ms) of each network.
            **settings: recorded with the times (batch size, input size, ...).
        Returns:
            dict: medians ``step_ms`` and ``inference_ms`` per network, the samples, and
            ``settings``.
        """
        warmup, repeats = self.timing["warmup"], self.timing["repeats"]
        for model in models.values():
            model.train()
        steps = {name: trainer_step(models[name], configs[name]) for name in models}
        with self._bar(steps, warmup + repeats, task) as bar:
            step_times = _alternate(steps, batches, warmup, bar)
        return {"step_ms": {k: float(np.median(v)) for k, v in step_times.items()},
                "inference_ms": {k: float(np.median(v)) for k, v in inference.items()},
                "step_samples": step_times, "inference_samples": inference, **settings}

    def _time_detectors(self, paths):
        warmup, repeats, count = (self.timing[k] for k in ("warmup", "repeats", "inference"))
        models, configs = {}, {}
        for name, path in paths.items():
            models[name], checkpoint = train_retinanet.load_run(path)
            configs[name] = _effective("detector", train_retinanet.TrainConfig(
                **{**checkpoint["config"], "data": self.base["detector"].data}))
        base = self.base["detector"]
        test_set = self._detector_test_set(base)
        images = [test_set[i % len(test_set)][0][None] for i in range(warmup + count)]
        predict = {name: model.predict for name, model in models.items()}
        with self._bar(predict, warmup + count, "detector inference") as bar:
            inference = _alternate(predict, images, warmup, bar)

        train_set, _ = train_retinanet.build_datasets(base, np.random.default_rng(0))
        loader = nn.data.DataLoader(train_set, batch_size=min(base.batch_size, len(train_set)),
                                    shuffle=True, drop_last=True, seed=0,
                                    collate_fn=collate_detection)
        batches = _cycle(lambda: iter(loader), warmup + repeats)

        def trainer_step(model, config):
            optimizer = nn.optim.AdamW(model.parameters(), lr=config.lr,
                                       weight_decay=config.weight_decay)

            def step(batch):
                losses = model.loss(*batch)
                optimizer.zero_grad()
                losses["loss"].backward()
                if config.clip_grad:
                    clip_grad_norm_(model.parameters(), config.clip_grad)
                optimizer.step()
            return step

        return self._time_training(models, configs, trainer_step, batches,
                                   "detector training steps", inference, inference_unit="image",
                                   batch_size=base.batch_size, image_size=base.image_size)

    def _time_segmenters(self, paths):
        from plates.classes import IGNORE_INDEX
        from plates.segmenter import class_weights, predict
        from plates.segmenter_data import TrainPatches, load_crops
        from plates.train_segmenter import BatchStream, load_segmenter
        from segmentation.losses import segmentation_loss

        warmup, repeats, count = (self.timing[k] for k in ("warmup", "repeats", "inference"))
        models, configs = {}, {}
        for name, path in paths.items():
            models[name], configs[name], _ = load_segmenter(path)
        base = self.base["segmenter"]
        val = load_crops(base.data, "val", base.crop_size, base.crop_padding, base.targets,
                         workers=base.data_workers)
        if len(val["crops"]) == 0:
            raise ValueError(f"{base.data!r} has no plates in its val split to time")
        crops = val["crops"][np.arange(INFERENCE_CROPS) % len(val["crops"])]
        calls = {name: (lambda model: lambda batch: predict(model, batch, INFERENCE_CROPS))(model)
                 for name, model in models.items()}
        with self._bar(calls, warmup + count, "segmenter inference") as bar:
            inference = _alternate(calls, [crops] * (warmup + count), warmup, bar)

        # Training batches as the trainer draws them (window jitter, colours, gap
        # weights), from the val plates: only the shapes matter for the time.
        patches = TrainPatches(base.data, "val", base.crop_size, base.crop_padding,
                               targets=base.targets, workers=base.data_workers)
        stream = BatchStream(patches, base, np.random.default_rng(0), prefetch=False)
        batches = [next(stream) for _ in range(warmup + repeats)]
        stream.close()

        def trainer_step(model, config):
            optimizer = nn.optim.Adam(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
            weights = class_weights(config)

            def step(batch):
                inputs, masks, pixel_weights = batch
                loss = segmentation_loss(model(nn.Tensor(inputs)), masks,
                                         dice_weight=config.dice_weight,
                                         ignore_index=IGNORE_INDEX, class_weights=weights,
                                         pixel_weights=pixel_weights)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            return step

        return self._time_training(models, configs, trainer_step, batches,
                                   "segmenter training steps", inference,
                                   inference_unit=f"batch of {INFERENCE_CROPS} crops",
                                   batch_size=base.batch_size, crop_size=list(base.crop_size))

    # ----------------------------------------------------------------------- the output
    def document(self):
        """``comparison.json``: the rows done so far with their timing, and the settings."""
        rows = []
        for task in self.config.tasks:
            timing = self.state["timing"].get(task) or {}
            for budget in BUDGETS:
                for model in MODELS[task]:
                    row = self.state["rows"].get(_row_key(task, model, budget))
                    if row is None:
                        continue
                    row = dict(row)
                    row["step_ms"] = (timing.get("step_ms") or {}).get(model)
                    row["inference_ms"] = (timing.get("inference_ms") or {}).get(model)
                    row["inference_unit"] = timing.get("inference_unit")
                    rows.append(row)
        complete = (len(rows) == len(BUDGETS) * 2 * len(self.config.tasks)
                    and all(t in self.state["timing"] for t in self.config.tasks))
        models = {task: {model: _label(task, model, self.plan(task, model, "time"))
                         for model in MODELS[task]} for task in self.config.tasks}
        timing = {task: {k: v for k, v in record.items() if not k.endswith("_samples")}
                  for task, record in self.state["timing"].items()}
        return {
            "kind": KIND, "format": FORMAT, "complete": complete,
            "quick": bool(self.config.quick or self.lab.quick),
            "tasks": list(self.config.tasks),
            "settings": {"minutes": {task: self.plan(task, MODELS[task][0], "time").minutes
                                     for task in self.config.tasks},
                         "steps": {task: self.state["steps"].get(task)
                                   for task in self.config.tasks},
                         "widths": {"detector": self.config.detector_width,
                                    "segmenter": self.config.segmenter_width},
                         "seed": self.lab.seed, "timing": dict(self.timing)},
            "models": models, "timing": timing, "rows": rows,
            "command": "python -m plates compare --run " + self.config.run + "".join(
                f" --{k} {v}" for k, v in (("minutes", self.config.minutes),
                                           ("steps", self.config.steps)) if v is not None)
            + (" --quick" if self.config.quick else ""),
            "machine": machine_info(),
        }


class _NoRun(FileNotFoundError):
    """No lab run, no data, or ``--resume`` without a comparison."""


def _lab_of(run_dir, progress):
    lab_path = os.path.join(run_dir, LAB_FILE)
    if not os.path.isfile(lab_path):
        raise _NoRun(f"{run_dir} holds no lab run ({lab_path} is missing): run "
                     f"python -m plates run --out {run_dir} first")
    saved = read_json(lab_path)["config"]
    lab = LabConfig(**dict(saved, out=run_dir, progress=progress))
    for root in (lab.scenes, lab.small_scenes):
        if not _has_splits(root):
            raise _NoRun(f"{root} holds no scenes: finish the lab run first "
                         f"(python -m plates run --out {run_dir} --resume)")
    return lab


def compare(config, resume=False, add_tasks=()):
    """Run (or continue) a comparison; returns ``comparison.json``'s contents.

    Args:
        config (CompareConfig): the comparison. With ``resume`` the saved settings are
            used (only ``progress`` comes from ``config``).
        resume (bool): continue the comparison of ``config.run``.
        add_tasks (sequence of str): with ``resume``, stages to compare besides the saved
            ones (a comparison started with ``--tasks detector`` continued with
            ``--resume --tasks segmenter`` does both).
    Raises:
        FileNotFoundError: no lab run or no scenes in ``config.run``; ``resume`` without
            a comparison.
        FileExistsError: the run holds a comparison and ``resume`` is False.
        nn.engine.TrainingInterrupted: Ctrl-C during a training (its ``last.npz`` saved).
    """
    if not isinstance(config, CompareConfig):
        raise TypeError(f"config must be a CompareConfig, got {type(config).__name__}")
    lab = _lab_of(config.run, config.progress)
    state_path = os.path.join(config.run, COMPARISON_DIR, STATE_FILE)
    if resume:
        if not os.path.isfile(state_path):
            raise _NoRun(f"--resume: {config.run} holds no comparison ({state_path} is missing)")
        state = read_json(state_path)
        tasks = tuple(state["config"]["tasks"]) + tuple(add_tasks)
        config = CompareConfig(**dict(state["config"], run=config.run, progress=config.progress,
                                      tasks=tuple(dict.fromkeys(tasks))))
        state["config"] = config.to_dict()
    else:
        if os.path.isfile(state_path):
            raise FileExistsError(f"{config.run} already holds a comparison: continue it with "
                                  f"--resume, or remove {os.path.dirname(state_path)} and "
                                  f"{os.path.join(config.run, COMPARISON_FILE)}")
        state = {"config": config.to_dict(), "steps": {}, "rows": {}, "timing": {}}
    os.makedirs(os.path.join(config.run, COMPARISON_DIR), exist_ok=True)
    state.setdefault("sessions", []).append({"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                             "load_average": _load_average()})
    work = _Comparison(config, lab, state)
    total = len(config.tasks) * (2 * len(BUDGETS) + 1)
    number = 0
    for task in config.tasks:
        for budget in BUDGETS:
            for model in MODELS[task]:
                number += 1
                work.row(task, model, budget, number, total)
        number += 1
        work.measure(task, number, total)
    return work.save()


# ============================================================================== reading it
def _ratio(a, b):
    """``a / b`` when both are positive numbers, else None."""
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             and v > 0 for v in (a, b))
    return a / b if ok else None


def _rows_by_key(comparison):
    return {_row_key(r["task"], r["model"], r["budget"]): r for r in comparison.get("rows", [])}


def budget_text(row):
    """A row's budget in words: minutes, or steps (a time row of a lab whose budget was a
    step count, as ``--quick`` runs are, says its steps)."""
    if row["budget"] == "steps":
        return f"{row['budget_steps']} steps"
    if row.get("minutes") is None:
        return f"{row['total_steps']} steps: the lab's budget"
    return f"{row['minutes']:.1f} min"


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt(value, spec=".3f"):
    """A number formatted, or ``--`` when missing (NaN is written as null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "--"
    return format(value, spec)


def _versus(name_a, value_a, name_b, value_b, unit=""):
    """``"<winner> higher by d"`` or ``"equal"`` for two figures (3 decimals)."""
    if value_a is None or value_b is None:
        return "not comparable"
    difference = round(value_b - value_a, 3)
    if difference == 0:
        return "equal to 3 decimals"
    winner = name_b if difference > 0 else name_a
    return f"{winner} higher by {abs(difference):.3f}{unit}"


# Differences of the test metric below this are called level in ``summarize``: between
# runs of one network that differ only in their seed, test mean IoU and mAP move by about
# this much.
LEVEL = 0.01
# Inference costs within this ratio of each other are called about the same.
COST_LEVEL = 1.1


def summarize(comparison):
    """What the numbers of ``comparison.json`` show, in sentences generated from them.

    Returns:
        list[str]: paragraphs of plain text (no markup): a note for a ``--quick``
        comparison, then one per stage (accuracy in the same time, in the same steps,
        the costs, and which network the numbers favour).
    """
    rows = _rows_by_key(comparison)
    out = []
    if comparison.get("quick"):
        out.append("A smoke comparison (--quick: tiny networks, a few steps): it checks the "
                   "machinery; its numbers say nothing about the architectures.")
    for task in comparison.get("tasks", []):
        sentences = []
        small_name, big_name = MODELS[task]
        labels = comparison.get("models", {}).get(task, {})
        short = {small_name: "the small backbone" if task == "detector" else "the U-Net",
                 big_name: "ResNet-18" if task == "detector" else "the ResNet-18 U-Net"}
        metric = "map" if task == "detector" else "mean_iou"
        metric_name = "test mAP" if task == "detector" else "test mean IoU"

        def score(row):
            value = row["test"].get(metric)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return value if ok and math.isfinite(value) else None

        def extra(row):
            if task == "detector":
                ap50 = row["test"].get("ap50_per_class") or {}
                return ", AP50 " + ", ".join(f"{k} {_fmt(v)}" for k, v in ap50.items())
            return f", {_fmt(row['test'].get('read_exact'), '.1%')} of the plates read"

        a, b = (rows.get(_row_key(task, name, "time")) for name in (small_name, big_name))
        stage = "Detector" if task == "detector" else "Segmenter"
        if a and b:
            sentences.append(
                f"{stage}, the same budget ({budget_text(a)}): "
                f"{labels.get(big_name, big_name)} reaches {metric_name} {_fmt(score(b))}"
                f"{extra(b)} in {b['steps']} steps; {labels.get(small_name, small_name)} "
                f"{_fmt(score(a))}{extra(a)} in {a['steps']} steps "
                f"({_versus(short[small_name], score(a), short[big_name], score(b))}).")
        c, d = (rows.get(_row_key(task, name, "steps")) for name in (small_name, big_name))
        if c and d:
            slower = _ratio(d["train_seconds"], c["train_seconds"])
            sentences.append(
                f"With the same {d['budget_steps']} steps: {short[big_name]} {_fmt(score(d))}, "
                f"{short[small_name]} {_fmt(score(c))} "
                f"({_versus(short[small_name], score(c), short[big_name], score(d))})"
                + (f"; {short[big_name]} trained {slower:.1f}x as long "
                   f"({_duration(d['train_seconds'])} against {_duration(c['train_seconds'])})."
                   if slower else "."))
        if a and b:
            parameters = _ratio(b.get("parameters"), a.get("parameters"))
            step = _ratio(b.get("step_ms"), a.get("step_ms"))
            inference = _ratio(b.get("inference_ms"), a.get("inference_ms"))
            costs = []
            if parameters:
                costs.append(f"{parameters:.1f}x the parameters ({b['parameters']:,} against "
                             f"{a['parameters']:,})")
            if step:
                costs.append(f"a training step {step:.1f}x as long ({b['step_ms']:.0f} against "
                             f"{a['step_ms']:.0f} ms)")
            if inference:
                unit = b.get("inference_unit") or ""
                costs.append(f"inference {inference:.1f}x as long ({b['inference_ms']:.0f} "
                             f"against {a['inference_ms']:.0f} ms per {unit})")
            if costs:
                sentences.append(f"{short[big_name][0].upper() + short[big_name][1:]} has "
                                 + "; ".join(costs) + ".")
            if score(a) is not None and score(b) is not None and step and inference \
                    and not comparison.get("quick"):
                gain = score(b) - score(a)
                if gain >= LEVEL:
                    verdict = (f"in the same time {short[big_name]} is the more accurate "
                               f"{task}, at {inference:.1f}x the inference cost")
                elif gain <= -LEVEL:
                    verdict = (f"in the same time {short[small_name]} is the more accurate "
                               f"{task}" + (f", with {inference:.1f}x cheaper inference"
                                            if inference >= COST_LEVEL else "")
                               + f": it stays the lab's {task}")
                else:
                    verdict = (f"in the same time the two are level ({metric_name} "
                               f"{abs(gain):.3f} apart, under {LEVEL:g})")
                    if inference >= COST_LEVEL:
                        verdict += (f"; {short[small_name]} costs {inference:.1f}x less at "
                                    f"inference: it stays the lab's {task}")
                    elif inference <= 1 / COST_LEVEL:
                        verdict += (f"; {short[big_name]} costs {1 / inference:.1f}x less at "
                                    "inference")
                    else:
                        verdict += ", at about the same inference cost"
                sentences.append(f"So, on this machine, {verdict} (one seed per network: "
                                 "a difference of a hundredth or two may be the seed's).")
        if sentences:
            out.append(" ".join(sentences))
    return out


def markdown_table(comparison):
    """The rows of ``comparison.json`` as a Markdown table (for ``docs/results.md``)."""
    header = ["stage", "network", "budget", "steps", "train min", "parameters", "step ms",
              "inference ms", "test accuracy", "reused"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison.get("rows", []):
        test = row["test"]
        if row["task"] == "detector":
            accuracy = f"mAP {_fmt(test.get('map'))}, AP50 " + ", ".join(
                f"{k} {_fmt(v)}" for k, v in (test.get("ap50_per_class") or {}).items())
        else:
            accuracy = (f"mean IoU {_fmt(test.get('mean_iou'))}, read "
                        f"{_fmt(test.get('read_exact'), '.1%')}")
        inference = _fmt(row.get("inference_ms"), ".0f")
        cells = [row["task"], row["label"], budget_text(row), str(row["steps"]),
                 _fmt(row["train_seconds"] / 60, ".1f"), f"{row['parameters']:,}",
                 _fmt(row.get("step_ms"), ".0f"),
                 inference + (f" / {row['inference_unit']}" if row.get("inference_unit") else ""),
                 accuracy, row["source"] if row["reused"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ================================================================================ command
def build_parser(parser=None):
    """The options of ``python -m plates compare`` (added to ``parser`` when given)."""
    parser = parser or argparse.ArgumentParser(prog="python -m plates compare")
    parser.description = ("The lab's extra: train both stages again with ResNet-18 (detector "
                          "backbone, U-Net encoder) on a run's data, in the same time and in "
                          "the same number of steps; writes RUN/comparison.json.")
    parser.add_argument("--run", required=True, help="a run directory of python -m plates run")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training minutes of both stages' time runs, split as the lab "
                             "splits them (default: the lab's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of both stages' step runs (default: the steps each small "
                             "network took in its time run)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None,
                        help="the stages to compare (default both; with --resume: stages to "
                             "add to the saved ones)")
    parser.add_argument("--detector-width", type=float, default=DETECTOR_WIDTH,
                        help=f"ResNet-18 backbone width multiplier (default {DETECTOR_WIDTH:g})")
    parser.add_argument("--segmenter-width", type=float, default=SEGMENTER_WIDTH,
                        help=f"ResNet-18 encoder width multiplier (default {SEGMENTER_WIDTH:g})")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: the lab's --quick trainer settings, few timing repeats")
    parser.add_argument("--resume", action="store_true",
                        help="continue the comparison in RUN: finished rows are kept, an "
                             "interrupted training continues from its last.npz")
    parser.add_argument("--markdown", action="store_true",
                        help="print RUN/comparison.json as a Markdown table and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the library's kernels (default DETSEG_NUM_THREADS or 2)")
    return parser


def main(args):
    """``python -m plates compare`` with parsed ``args``; returns the exit status."""
    if args.markdown:
        comparison = read_json(os.path.join(args.run, COMPARISON_FILE))
        if comparison is None or comparison.get("kind") != KIND:
            print(f"plates compare: {os.path.join(args.run, COMPARISON_FILE)} is missing or "
                  "not a comparison", file=sys.stderr)
            return 2
        print(markdown_table(comparison))
        return 0
    if args.threads is not None:
        if args.threads < 1:
            print("plates compare: --threads must be >= 1", file=sys.stderr)
            return 2
        nn.set_num_threads(args.threads)
        os.environ["DETSEG_NUM_THREADS"] = str(args.threads)
    try:
        config = CompareConfig(run=args.run, minutes=args.minutes, steps=args.steps,
                               tasks=tuple(args.tasks or TASKS),
                               detector_width=args.detector_width,
                               segmenter_width=args.segmenter_width, quick=args.quick,
                               progress=not args.quiet)
    except (TypeError, ValueError) as exc:
        print(f"plates compare: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        comparison = compare(config, resume=args.resume, add_tasks=args.tasks or ())
    except (FileExistsError, _NoRun) as exc:
        print(f"plates compare: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nplates compare: interrupted; continue with: python -m plates compare --run "
              f"{args.run} --resume", file=sys.stderr)
        return 130
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min; wrote "
          f"{os.path.join(args.run, COMPARISON_FILE)}")
    print(markdown_table(comparison))
    for sentence in summarize(comparison):
        print(sentence)
    return 0
