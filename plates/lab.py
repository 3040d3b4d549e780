"""The license-plate lab from start to end: ``python -m plates run --out RUN_DIR``.

Labwork 7 of the lecture: input a photo of cars or motorbikes, output the properly
segmented characters of its plates, with two stages trained from scratch (detection,
then segmentation), evaluated with detection and segmentation metrics, and a LaTeX
report. ``run`` does all of it, stage by stage:

1. ``render``: the synthetic street scenes (``plates.synthetic``) at 1024 px, as a real
   photo dataset would be, with boxes, class and instance masks (train/val/test
   80/10/10%).
2. ``shrink``: a copy of the scenes at the detector's size (256 px; the detector's boxes
   only, JPEG), written once with ``plates.reader.resize_longer_side``, the resize the
   reader applies to a photo. Measured: decoding a 1024-px JPEG and resizing it costs
   11.5 ms, decoding the 256-px copy 1.3 ms; a 10-minute detector run loads ~8000
   images, so resizing on load would cost ~80 s of its budget, the copy ~15 s once.
3. ``detector``: RetinaNet (``plates.train_detector``) on the small copy,
   ``DETECTOR_SHARE`` (9/19.5) of ``--minutes``.
4. ``segmenter``: the U-Net (``plates.train_segmenter``) on plates cut from the full
   1024-px frames, the rest of ``--minutes`` (its crops are read before its clock
   starts).
5. ``evaluate``: the reader's plate threshold chosen on the validation scenes
   (``reader.json``: the best F2, recall weighing twice, ``plates.evaluate.PLATE_BETA``),
   then ``plates.evaluate`` on the held-out test scenes, with figures; three test scenes
   drawn as ``read`` draws them.
6. ``report``: ``metrics.json``, ``Report.7.Detection.Segmentation.tex`` and its PDF
   (``plates.report``).

The budget. ``--minutes`` is the training time of both stages together (default
``DEFAULT_MINUTES``: 9 minutes detector, 10.5 segmenter); rendering, loading and
evaluating come on top, in proportion to the scenes. Measured on the project's 2-core
machine (load 1.3-1.7, nothing else running), the defaults: rendering 2500 scenes and
their decoration masks 144 s, the small copy 24 s, detector 543 s (535 s training,
2092 steps), segmenter 684 s (21 s reading its crops, 629 s training, 1803 steps),
evaluation 72 s (250 val + 250 test scenes, five-shift segmentation), report and PDF a
few seconds: 24.5 minutes; the report's timing table has the figures of each run.

Resuming. ``lab.json`` in the run directory holds the configuration and what each
stage did (seconds, sessions). ``--resume`` continues with the saved configuration: a
stage whose output exists is skipped (the scenes' ``ImageSets``, a trainer's
``metrics.json``, ``evaluation/evaluation.json``), an interrupted training continues
from its ``last.npz``, and the report is always rewritten. ``--quick`` runs the whole
pipeline in seconds on a few small scenes with tiny networks (tests, tutorials): it
checks the machinery, not accuracy.
"""
import argparse
import dataclasses
import math
import multiprocessing
import os
import platform
import sys
import time

import numpy as np
from tqdm import tqdm

from detection.datasets.voc import (read_class_names, read_image_set, read_rgb,
                                    read_voc_annotation, write_class_names, write_image_sets,
                                    write_voc_example)
from detection.train_retinanet import train_retinanet
from nn.io import read_json, write_json
from plates.evaluate import EVALUATION_FILE, choose_plate_threshold, evaluate_reader, \
    write_evaluation
from plates.reader import (DETECTOR_DIR, READER_FILE, SEGMENTER_DIR, PlateReader, load_image,
                           resize_longer_side, save_annotated)
from plates.train_detector import DETECTOR_CLASSES, detector_train_config
from plates.report import LatexError
from plates.train_segmenter import TrainConfig, quick_config, train_digit_segmenter

__all__ = ["LabConfig", "STAGES", "LAB_FILE", "METRICS_FILE", "EVALUATION_DIR",
           "DEFAULT_IMAGES", "DEFAULT_MINUTES", "DETECTOR_SHARE", "write_detector_copy",
           "machine_info", "run", "main"]

DEFAULT_IMAGES = 2500  # scenes rendered: 2000 / 250 / 250 (about 2 minutes on 2 cores)
DEFAULT_MINUTES = 19.5  # training budget of both stages
DETECTOR_SHARE = 9 / 19.5  # of the budget: 9 minutes detector, 10.5 minutes segmenter
IMAGE_SIZE, DETECTOR_SIZE = 1024, 256
# --quick: a few small scenes, tiny networks, a few steps each.
QUICK = {"num_images": 16, "image_size": 256, "detector_size": 128, "detector_steps": 8,
         "segmenter_steps": 16}
STAGES = ("render", "shrink", "detector", "segmenter", "evaluate", "report")
LAB_FILE, METRICS_FILE, EVALUATION_DIR = "lab.json", "metrics.json", "evaluation"
EXAMPLES = 3  # test scenes drawn as `read` draws them


@dataclasses.dataclass
class LabConfig:
    """What a lab run depends on (saved in ``lab.json``).

    Attributes:
        out (str): the run directory.
        data (str | None): where the scenes are rendered (``out/data`` when None); an
            existing dataset there is used as it is.
        num_images (int), image_size (int): scenes rendered and their side.
        detector_size (int): the detector's input side (the small copy's longer side).
        minutes (float): training budget of both stages; ``detector_share`` of it goes to
            the detector.
        seed (int): seeds the scenes and both trainings.
        quick (bool): seconds-long run (``QUICK``).
        workers (int): processes rendering and reading scenes.
        progress (bool): progress bars.
    """

    out: str
    data: str = None
    num_images: int = DEFAULT_IMAGES
    image_size: int = IMAGE_SIZE
    detector_size: int = DETECTOR_SIZE
    minutes: float = DEFAULT_MINUTES
    detector_share: float = DETECTOR_SHARE
    seed: int = 0
    quick: bool = False
    workers: int = 2
    progress: bool = True

    def __post_init__(self):
        if self.quick:
            self.num_images = min(self.num_images, QUICK["num_images"])
            self.image_size = QUICK["image_size"]
            self.detector_size = QUICK["detector_size"]
        if not isinstance(self.out, (str, os.PathLike)) or not os.fspath(self.out):
            raise ValueError(f"out must be a directory path, got {self.out!r}")
        self.out = os.fspath(self.out)
        if self.data is not None:
            self.data = os.fspath(self.data)
        for name in ("num_images", "image_size", "detector_size", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_images < 10:
            raise ValueError(f"num_images must be >= 10 (train, val and test scenes), got "
                             f"{self.num_images}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if isinstance(self.minutes, bool) or not isinstance(self.minutes, (int, float)) \
                or not math.isfinite(self.minutes) or self.minutes <= 0:
            raise ValueError(f"minutes must be a positive number, got {self.minutes!r}")
        if not 0 < self.detector_share < 1:
            raise ValueError(f"detector_share must be in (0, 1), got {self.detector_share!r}")

    @property
    def data_root(self):
        """Where the scenes are: ``data``, or ``out/data`` (which moves with the run)."""
        return os.path.join(self.out, "data") if self.data is None else self.data

    @property
    def scenes(self):
        """The full-resolution scenes."""
        return os.path.join(self.data_root, f"scenes{self.image_size}")

    @property
    def small_scenes(self):
        """The detector's copy."""
        return os.path.join(self.data_root, f"scenes{self.image_size}_at{self.detector_size}")

    def to_dict(self):
        return dataclasses.asdict(self)


# ================================================================================== data
def _has_splits(root):
    return os.path.isfile(os.path.join(root, "ImageSets", "Main", "test.txt"))


def _shrink_one(task):
    """Worker: one scene's small copy (image and detector boxes)."""
    source, target, image_id, size, classes = task
    annotation = read_voc_annotation(os.path.join(source, "Annotations", image_id + ".xml"))
    path = os.path.join(source, "JPEGImages", annotation["filename"] or image_id + ".jpg")
    image = read_rgb(path)
    small = resize_longer_side(image, size)
    height, width = image.shape[:2]
    factors = np.array([small.shape[1] / width, small.shape[0] / height] * 2)
    objects = []
    for obj in annotation["objects"]:
        if obj["name"] not in classes:
            continue
        box = np.asarray(obj["bbox"], np.float64) * factors
        box[0::2] = box[0::2].clip(0, small.shape[1])
        box[1::2] = box[1::2].clip(0, small.shape[0])
        if box[2] - box[0] > 0.01 and box[3] - box[1] > 0.01:
            objects.append({"name": obj["name"], "bbox": tuple(float(v) for v in box),
                            "difficult": obj["difficult"], "truncated": obj["truncated"]})
    write_voc_example(target, image_id, small, objects, image_format="jpg", jpeg_quality=95)


def write_detector_copy(source, target, size, classes=DETECTOR_CLASSES, workers=1,
                        progress=False):
    """A copy of a VOC dataset for the detector: images resized to a longer side of
    ``size`` (``resize_longer_side``), boxes of ``classes`` scaled alike, same splits and
    class names. The ``ImageSets`` are written last: they mark a complete copy.

    Returns:
        dict: ``images`` and ``seconds``.
    """
    start = time.perf_counter()
    splits = {name: read_image_set(source, name) for name in ("train", "val", "test")}
    ids = [image_id for name in ("train", "val", "test") for image_id in splits[name]]
    tasks = [(source, target, image_id, int(size), tuple(classes)) for image_id in ids]
    os.makedirs(target, exist_ok=True)
    bar = tqdm(total=len(tasks), desc=f"scenes at {size} px", unit="img", disable=not progress)
    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                _shrink_one(task)
                bar.update(1)
        else:
            with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
                for _ in pool.imap_unordered(_shrink_one, tasks, chunksize=8):
                    bar.update(1)
    finally:
        bar.close()
    write_class_names(target, read_class_names(source))
    write_image_sets(target, splits)
    return {"images": len(ids), "seconds": time.perf_counter() - start}


# ============================================================================== machine
def machine_info():
    """The machine a run ran on: CPU model, cores, Python, NumPy, platform, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(), "load_average": load}


# ================================================================================ stages
class _Lab:
    """One session of a run: the configuration, ``lab.json``'s state, the stages."""

    def __init__(self, config, state):
        self.config, self.state = config, state

    # ---------------------------------------------------------------------- bookkeeping
    def _save_state(self):
        write_json(os.path.join(self.config.out, LAB_FILE), self.state)

    def _say(self, text):
        if self.config.progress:
            print(text, flush=True)

    def stage(self, name, work, done):
        """Run ``work()`` unless ``done()``; record its seconds and result in ``lab.json``."""
        record = self.state["stages"].setdefault(name, {"seconds": 0.0, "sessions": 0})
        number = STAGES.index(name) + 1
        if done():
            record.setdefault("done", True)
            self._say(f"[{number}/{len(STAGES)}] {name}: done before, skipped")
            self._save_state()
            return record
        self._say(f"[{number}/{len(STAGES)}] {name}")
        start = time.perf_counter()
        record["sessions"] += 1
        self._save_state()
        try:
            result = work()
        finally:
            record["seconds"] = round(record["seconds"] + time.perf_counter() - start, 2)
            self._save_state()
        record.update({key: value for key, value in (result or {}).items()
                       if key not in ("seconds", "sessions")}, done=True)
        self._save_state()
        return record

    # --------------------------------------------------------------------------- stages
    def render(self):
        from plates.synthetic import generate_plate_dataset

        config = self.config
        summary = generate_plate_dataset(config.scenes, config.num_images, config.seed,
                                         image_size=config.image_size, workers=config.workers,
                                         progress=config.progress)
        return {key: summary[key] for key in ("num_images", "splits", "cars", "plates",
                                              "characters", "images_without_plate")}

    def shrink(self):
        config = self.config
        return write_detector_copy(config.scenes, config.small_scenes, config.detector_size,
                                   workers=config.workers, progress=config.progress)

    def train_detector(self):
        config = self.config
        out = os.path.join(config.out, DETECTOR_DIR)
        fields = dict(minutes=config.minutes * config.detector_share, seed=config.seed,
                      image_size=config.detector_size, progress=config.progress)
        if config.quick:
            fields.update(quick=True, steps=QUICK["detector_steps"])
        train_config = detector_train_config(config.small_scenes, out, **fields)
        resume = os.path.isfile(os.path.join(out, "last.npz"))
        result = train_retinanet(train_config, resume=resume)
        return {"resumed": resume, "steps": result["steps"],
                "train_seconds": result["train_seconds"]}

    def train_segmenter(self):
        config = self.config
        out = os.path.join(config.out, SEGMENTER_DIR)
        fields = dict(data=config.scenes, out=out, num_images=config.num_images,
                      image_size=config.image_size, data_seed=config.seed, seed=config.seed,
                      data_workers=config.workers, progress=config.progress)
        if config.quick:
            train_config = quick_config(steps=QUICK["segmenter_steps"], **fields)
        else:
            train_config = TrainConfig(minutes=config.minutes * (1 - config.detector_share),
                                       **fields)
        resume = os.path.isfile(os.path.join(out, "last.npz"))
        result = train_digit_segmenter(train_config, resume=resume)
        return {"resumed": resume, "steps": result["steps"],
                "train_seconds": result["train_seconds"], "load_seconds": result["load_seconds"]}

    def evaluate(self):
        config = self.config
        reader = PlateReader.from_run(config.out)
        chosen = choose_plate_threshold(reader, config.scenes, "val", progress=config.progress)
        reader.settings["plate_threshold"] = chosen["plate_threshold"]
        write_json(os.path.join(config.out, READER_FILE),
                   {**reader.settings, "chosen_on": "val", "val": chosen})
        results = evaluate_reader(reader, config.scenes, "test", progress=config.progress)
        out = os.path.join(config.out, EVALUATION_DIR)
        write_evaluation(results, out)
        # A few test scenes with plates, drawn as `python -m plates read` draws them.
        examples = []
        for record in results["plates"]:
            if len(examples) == EXAMPLES:
                break
            if record["image"] in examples:
                continue
            path = os.path.join(config.scenes, "JPEGImages", record["image"] + ".jpg")
            image = load_image(path)
            save_annotated(os.path.join(out, f"example_{record['image']}.jpg"), image,
                           reader.read(image))
            examples.append(record["image"])
        end = results["end_to_end"]
        self._say(f"test: {end['read']} of {end['plates']} plates read exactly "
                  f"({end['read_exact']:.1%}); plate AP50 "
                  f"{results['detection']['ap50_per_class'].get('plate', float('nan')):.3f}")
        return {"plate_threshold": chosen["plate_threshold"], "examples": examples}

    def report(self):
        from plates.report import write_report

        write_metrics(self.config.out)
        result = write_report(self.config.out, compile_pdf=True, quiet=not self.config.progress)
        return {"pdf": result["pdf"], "compiled": result["compiled"]}


def write_metrics(run_dir):
    """``RUN_DIR/metrics.json``: the run's figures gathered from its stages' files.

    Returns:
        dict: what was written (``config``, ``stages``, ``detector``, ``segmenter``,
        ``reader``, ``evaluation`` without the per-plate records, ``machine``).
    """
    lab = read_json(os.path.join(run_dir, LAB_FILE)) or {}
    detector = read_json(os.path.join(run_dir, DETECTOR_DIR, "metrics.json")) or {}
    segmenter = read_json(os.path.join(run_dir, SEGMENTER_DIR, "metrics.json")) or {}
    evaluation = read_json(os.path.join(run_dir, EVALUATION_DIR, EVALUATION_FILE)) or {}
    metrics = {
        "config": lab.get("config"),
        "stages": lab.get("stages"),
        "detector": {key: detector.get(key) for key in (
            "parameters", "steps", "best_step", "epochs", "train_seconds", "val", "test",
            "inference_ms_per_image")},
        "segmenter": {key: segmenter.get(key) for key in (
            "steps", "best_step", "train_seconds", "load_seconds", "train_plates", "val",
            "test", "test_single")},
        "reader": read_json(os.path.join(run_dir, READER_FILE)),
        "evaluation": {key: value for key, value in evaluation.items() if key != "plates"},
        "machine": machine_info(),
    }
    write_json(os.path.join(run_dir, METRICS_FILE), metrics)
    return metrics


class _NoRun(FileNotFoundError):
    """``--resume`` where there is no run."""


def run(config, resume=False):
    """Run (or continue) the lab; returns ``lab.json``'s state.

    Args:
        config (LabConfig): the run. With ``resume`` the saved configuration is used
            (only ``progress`` comes from ``config``).
        resume (bool): continue the run in ``config.out``.
    Raises:
        FileExistsError: ``config.out`` holds a run and ``resume`` is False.
        FileNotFoundError: ``resume`` without a run in ``config.out``.
        nn.engine.TrainingInterrupted: Ctrl-C during a training (its ``last.npz`` saved).
    """
    if not isinstance(config, LabConfig):
        raise TypeError(f"config must be a LabConfig, got {type(config).__name__}")
    lab_path = os.path.join(config.out, LAB_FILE)
    if os.path.exists(config.out) and not os.path.isdir(config.out):
        raise NotADirectoryError(f"--out {config.out} is a file; it must be a run directory")
    if resume:
        if not os.path.isfile(lab_path):
            raise _NoRun(f"--resume: {config.out} holds no lab run ({lab_path} is missing)")
        state = read_json(lab_path)
        saved = dict(state["config"], progress=config.progress, out=config.out)
        config = LabConfig(**saved)
    else:
        if os.path.isfile(lab_path):
            raise FileExistsError(f"{config.out} already holds a lab run: continue it with "
                                  f"--resume, or choose another --out")
        state = {"config": config.to_dict(), "stages": {}}
    os.makedirs(config.out, exist_ok=True)
    state.setdefault("sessions", []).append({"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                             "machine": machine_info()})
    lab = _Lab(config, state)
    out = config.out
    lab.stage("render", lab.render, lambda: _has_splits(config.scenes))
    lab.stage("shrink", lab.shrink, lambda: _has_splits(config.small_scenes))
    lab.stage("detector", lab.train_detector,
              lambda: os.path.isfile(os.path.join(out, DETECTOR_DIR, "metrics.json")))
    lab.stage("segmenter", lab.train_segmenter,
              lambda: os.path.isfile(os.path.join(out, SEGMENTER_DIR, "metrics.json")))
    lab.stage("evaluate", lab.evaluate,
              lambda: os.path.isfile(os.path.join(out, EVALUATION_DIR, EVALUATION_FILE)))
    lab.stage("report", lab.report, lambda: False)
    return state


# ================================================================================ command
def build_parser(parser=None):
    """The options of ``python -m plates run`` (added to ``parser`` when given)."""
    parser = parser or argparse.ArgumentParser(prog="python -m plates run")
    parser.description = ("The whole lab: render the scenes, train the plate detector and the "
                          "digit segmenter, evaluate end to end, write the report.")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--data", default=None,
                        help="where the scenes go (default OUT/data; an existing dataset there "
                             "is reused)")
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"training budget of both stages (default {DEFAULT_MINUTES:g}: "
                             f"{DEFAULT_MINUTES * DETECTOR_SHARE:g} detector, "
                             f"{DEFAULT_MINUTES * (1 - DETECTOR_SHARE):g} segmenter)")
    parser.add_argument("--num-images", type=int, default=None,
                        help=f"scenes to render (default {DEFAULT_IMAGES})")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long run: checks the machinery, not accuracy")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUT: finished stages are skipped, an "
                             "interrupted training continues from its last.npz")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the library's kernels (default DETSEG_NUM_THREADS or 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes rendering and reading scenes (default 2)")
    return parser


def main(args):
    """``python -m plates run`` with parsed ``args``; returns the exit status."""
    import nn

    if args.threads is not None:
        if args.threads < 1:
            print("plates run: --threads must be >= 1", file=sys.stderr)
            return 2
        nn.set_num_threads(args.threads)
        os.environ["DETSEG_NUM_THREADS"] = str(args.threads)
    fields = {"out": args.out, "data": args.data, "seed": args.seed, "quick": args.quick,
              "workers": args.workers, "progress": not args.quiet}
    if args.minutes is not None:
        fields["minutes"] = args.minutes
    if args.num_images is not None:
        fields["num_images"] = args.num_images
    resume_command = f"python -m plates run --out {args.out} --resume"
    start = time.perf_counter()
    try:
        config = LabConfig(**fields)
    except (ValueError, TypeError) as exc:
        print(f"plates run: {exc}", file=sys.stderr)
        return 2
    try:
        state = run(config, resume=args.resume)
    except (FileExistsError, NotADirectoryError, _NoRun) as exc:
        print(f"plates run: {exc}", file=sys.stderr)
        return 2
    except LatexError as exc:
        print(f"plates run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nplates run: interrupted; continue with: {resume_command}", file=sys.stderr)
        return 130
    report = state["stages"]["report"]
    evaluation = read_json(os.path.join(args.out, EVALUATION_DIR, EVALUATION_FILE))
    end = evaluation["end_to_end"]
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min: {end['read']} of "
          f"{end['plates']} test plates read exactly ({end['read_exact']:.1%}); "
          f"metrics in {os.path.join(args.out, METRICS_FILE)}")
    if report["compiled"]:
        print(f"report: {report['pdf']}")
    return 0
