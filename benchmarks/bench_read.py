"""Speed of ``python -m plates read``: one 1024x1024 photo from JPEG to JSON, and the two
networks' inference against the same networks in torch.

Run as a script::

    python benchmarks/bench_read.py --run RUN_DIR    # a trained lab run (python -m plates run)
    python benchmarks/bench_read.py                  # fresh networks (see below)
    python benchmarks/bench_read.py --quick          # 2 rounds, fewer repeats

Cases:

- **read**: ``load_image`` (JPEG decode), ``PlateReader.read`` (letterbox, detector,
  plate crops from the full frame, one U-Net batch, ``read_plate``, masks mapped back)
  and the ``plates.json`` entry serialized, on a rendered 1024x1024 street scene (with
  ``--run``: the run's first test scene where its networks report a plate). Without a
  run the networks are freshly initialised, the detector's plate bias raised so that it
  reports ``--plates`` plates (an untrained U-Net finds no character: reading costs a
  little less than with a trained one). Also timed alone: the detector's step
  (letterbox + predict), the segmenter's (crops + U-Net) and drawing the annotated image
  (``annotate`` + JPEG encoding; ``read`` writes it, the target does not count it).
  Target: median <= 300 ms at 2 threads.
- **networks**: the forward pass of the detector on one 256x256 image and of the U-Net on
  a batch of 4 crops of 40x120, evaluation mode, no gradient: ours against the torch
  twins of ``train_step_retinanet.py`` / ``train_step_unet.py`` (the same layers and
  widths, NCHW, ``torch.no_grad()``). Target: ratio <= 1.5.

Method (``benchmarks/harness.py``): each library in its own process with ``--threads``
threads (default 2), the processes alternated round by round, medians of all timed
repeats after warm-up. The machine is shared with other jobs: read the ratios.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DETECTOR_INPUT = (1, 256, 256, 3)
CROPS = (4, 40, 120, 3)


# ================================================================================ read
def _fresh_reader(plates):
    """A reader on fresh default-size networks whose detector reports ``plates`` plates."""
    import nn
    from detection.retinanet import RetinaNet
    from plates.reader import PlateReader
    from plates.segmenter import build_model
    from plates.train_detector import plate_detector_config
    from plates.train_segmenter import TrainConfig

    nn.manual_seed(0)
    detector = RetinaNet(plate_detector_config("small"))
    bias = detector.head.cls_logits.bias.data.reshape(-1, detector.config.num_classes)
    bias[:, 1], bias[:, 0] = 4.0, -8.0  # every anchor a plate (after NMS: many boxes)
    config = TrainConfig()
    segmenter = build_model(config)
    return PlateReader(detector, segmenter, 256, ("car", "plate"), config.crop_size,
                       config.crop_padding, config.read_min_area, max_plates=plates)


def _scene(run_dir, folder, reader):
    """A 1024x1024 JPEG: the run's first test scene where ``reader`` reports a plate (of
    the first 20; else the first), or a rendered scene with a plate."""
    if run_dir:
        from detection.datasets.voc import VOCDataset
        from plates.reader import load_image

        config = json.load(open(os.path.join(run_dir, "lab.json")))["config"]
        root = os.path.join(config.get("data") or os.path.join(run_dir, "data"),
                            f"scenes{config['image_size']}")
        paths = [record["image_path"] for record in VOCDataset(root, "test")._records]
        for path in paths[:20]:
            if reader.read(load_image(path)).plates:
                return path
        return paths[0]
    from PIL import Image

    from plates.synthetic import render_scene

    rng = np.random.default_rng(1)
    while True:
        image, objects, _, _ = render_scene(rng, 1024)
        if any(o["name"] == "plate" for o in objects):
            break
    path = os.path.join(folder, "scene.jpg")
    Image.fromarray(image).save(path, quality=90)
    return path


def read_cases(run_dir, plates, folder):
    sys.path.insert(0, ROOT)
    from plates.reader import PlateReader, annotate, load_image

    reader = PlateReader.from_run(run_dir) if run_dir else _fresh_reader(plates)
    path = _scene(run_dir, folder, reader)
    image = load_image(path)
    reading = reader.read(image)
    boxes = reading.detections["boxes"][reader.plate_boxes(reading.detections)]

    def read():
        return json.dumps(reader.read(load_image(path)).to_json(path))

    def draw():
        import io

        from PIL import Image

        Image.fromarray(annotate(image, reading)).save(io.BytesIO(), format="JPEG", quality=90)

    cases = {"read (decode to JSON)": read, "  decode JPEG": lambda: load_image(path),
             "  detector (letterbox + predict)": lambda: reader.detect(image),
             "  segmenter (crops + U-Net)": lambda: reader.segment(image, boxes),
             "  draw the annotated image": draw}
    return cases, {"plates": len(reading.plates),
                   "characters": sum(len(p.characters) for p in reading.plates),
                   "texts": [p.text for p in reading.plates], "scene": path}


# ============================================================================ networks
def network_cases(side):
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    rng = np.random.default_rng(0)
    images = rng.standard_normal(DETECTOR_INPUT).astype(np.float32)
    crops = rng.standard_normal(CROPS).astype(np.float32)
    if side == "torch":
        import torch

        from train_step_retinanet import torch_retinanet
        from train_step_unet import CONFIG, torch_unet
        from plates.segmenter import NUM_CLASSES

        torch.manual_seed(0)
        detector = torch_retinanet().eval()
        unet = torch_unet(3, NUM_CLASSES, CONFIG.base_channels, CONFIG.depth).eval()
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        c = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()

        def forward_torch(model, inputs):
            with torch.no_grad():
                return model(inputs)

        return {"detector forward 1x256x256": lambda: forward_torch(detector, x),
                "U-Net forward 4x40x120": lambda: forward_torch(unet, c)}
    import nn
    from detection.retinanet import RetinaNet
    from plates.segmenter import build_model
    from plates.train_detector import plate_detector_config
    from plates.train_segmenter import TrainConfig

    nn.manual_seed(0)
    detector = RetinaNet(plate_detector_config("small"))
    detector.eval()
    unet = build_model(TrainConfig())
    unet.eval()

    def forward(model, inputs):
        with nn.no_grad():
            return model(nn.Tensor(inputs))

    return {"detector forward 1x256x256": lambda: forward(detector, images),
            "U-Net forward 4x40x120": lambda: forward(unet, crops)}


# ================================================================================ main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_round_arguments(parser, ("read", "ours", "torch"))
    parser.add_argument("--run", default=None, help="a trained lab run directory")
    parser.add_argument("--plates", type=int, default=2,
                        help="plates the fresh detector reports (without --run; default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each process")
    args = parser.parse_args()
    rounds, repeats = harness.rounds_and_repeats(args)
    if args.worker == "read":
        with tempfile.TemporaryDirectory() as folder:
            cases, info = read_cases(args.run, args.plates, folder)
            print(json.dumps({"times": harness.time_cases(cases, repeats, args.warmup),
                              "info": info}))
        return None
    if args.worker:
        print(json.dumps(harness.time_cases(network_cases(args.worker), repeats, args.warmup)))
        return None

    common = ["--repeats", repeats, "--warmup", args.warmup, "--plates", args.plates]
    if args.run:
        common += ["--run", os.path.abspath(args.run)]

    def run(side):
        return harness.run_worker(__file__, ["--worker", side] + common, args.threads)

    samples, info = {}, None
    for side, result in harness.alternate(("read", "ours", "torch"), rounds, run):
        if side == "read":
            info = result["info"]
            result = result["times"]
        for name, values in result.items():
            samples.setdefault(side, {}).setdefault(name, []).extend(values)
    median = {side: {name: 1e3 * float(np.median(v)) for name, v in cases.items()}
              for side, cases in samples.items()}
    mode = (f"run {args.run}" if args.run else
            f"fresh networks, the detector made to report {args.plates} plates")
    print(f"\nread: {mode}; scene {info['scene']}: {info['plates']} plate(s), "
          f"{info['characters']} character(s) {info['texts']}")
    print(f"{args.threads} thread(s) per process; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; medians of {rounds} rounds x {repeats} repeats")
    print(f"{'case':36s} {'ms':>9s}")
    for name, ms in median["read"].items():
        print(f"{name:36s} {ms:9.1f}")
    print(f"\n{'network (inference)':36s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>6s}")
    summary = {"read_ms": round(median["read"]["read (decode to JSON)"], 2)}
    for name, ours in median["ours"].items():
        theirs = median["torch"][name]
        print(f"{name:36s} {ours:9.1f} {theirs:9.1f} {ours / theirs:6.2f}")
        key = "detector" if name.startswith("detector") else "unet"
        summary.update({f"{key}_ms": round(ours, 2), f"{key}_torch_ms": round(theirs, 2),
                        f"{key}_ratio": round(ours / theirs, 3)})
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    main()
