"""Speed of the synthetic plate generator against its budget: 200 images of 256x256 in
at most 30 s on 2 cores (issue 5).

Run as a script::

    python benchmarks/bench_synthetic.py            # 200 images, 3 rounds
    python benchmarks/bench_synthetic.py --quick    # 40 images, 1 round

What is timed:

- ``cli, K workers``: the whole command a user runs, wall clock, in a fresh process:
  ``python -m plates.synthetic plates --out TMP --num-images N --workers K
  --quiet`` (imports, font discovery, rendering, JPEG/PNG encoding, atomic writes,
  splits). Rounds interleave the worker counts; medians are reported.
- a per-stage profile of one process (``render_scene`` stages, then writing), to show
  where the time goes.

There is no reference library for this; the reference column is the budget, scaled to
the image count (``30 s * N / 200``), and the ratio is ours / budget (<= 1 meets it).
The machine is shared by several engineers, so timings are noisy: read the medians.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_SECONDS, BUDGET_IMAGES = 30.0, 200


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_cli(num_images, workers, image_size):
    """Wall-clock and CPU seconds (the process and its workers) of one CLI run."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "plates.synthetic", "plates",
                   "--out", os.path.join(tmp, "plates"), "--num-images", str(num_images),
                   "--seed", "0", "--image-size", str(image_size), "--workers", str(workers),
                   "--quiet"]
        cpu = _children_cpu()
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        return time.perf_counter() - start, _children_cpu() - cpu


def _stage_profile(num_images, image_size):
    """Time the stages of render_scene and the writing, in this process."""
    sys.path.insert(0, ROOT)
    from plates.synthetic import scene, generate
    from plates.synthetic.backgrounds import render_background
    from plates.synthetic.distractors import draw_distractors
    from plates.synthetic.effects import apply_camera_effects
    from detection.datasets.voc import write_voc_example

    totals = {"layout": 0.0, "background": 0.0, "vehicles+plates": 0.0, "effects": 0.0,
              "render_scene": 0.0, "write (jpg+png+xml)": 0.0}
    wrapped = {
        "layout": ("_place_vehicles", scene._place_vehicles),
        "background": ("render_background", render_background),
        "effects": ("apply_camera_effects", apply_camera_effects),
    }

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[key] += time.perf_counter() - start
        return wrapper

    for key, (name, fn) in wrapped.items():
        setattr(scene, name, timed(key, fn))
    scene.draw_distractors = timed("background", draw_distractors)
    scene.render_scene(0, image_size)   # warm-up: font discovery, glyph cache
    for key in totals:
        totals[key] = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(num_images):
            start = time.perf_counter()
            image, objects, class_mask, instance_mask = scene.render_scene(
                generate.image_rng(0, index), image_size)
            middle = time.perf_counter()
            write_voc_example(tmp, f"{index:06d}", image, objects, class_mask, instance_mask)
            totals["render_scene"] += middle - start
            totals["write (jpg+png+xml)"] += time.perf_counter() - middle
    for key, (name, fn) in wrapped.items():
        setattr(scene, name, fn)
    scene.draw_distractors = draw_distractors
    totals["vehicles+plates"] = totals["render_scene"] - totals["layout"] - totals["background"] \
        - totals["effects"]
    return {key: 1000 * value / num_images for key, value in totals.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 images, 1 round")
    parser.add_argument("--num-images", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    num_images = args.num_images or (40 if args.quick else BUDGET_IMAGES)
    rounds = args.rounds or (1 if args.quick else 3)
    budget = BUDGET_SECONDS * num_images / BUDGET_IMAGES

    times = {1: [], 2: []}
    cpus = {1: [], 2: []}
    for r in range(rounds):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            wall, cpu = _run_cli(num_images, workers, args.image_size)
            times[workers].append(wall)
            cpus[workers].append(cpu)
    load = os.getloadavg()[0]
    print(f"synthetic plates: {num_images} images of {args.image_size}x{args.image_size}, "
          f"{rounds} round(s), medians; budget {BUDGET_SECONDS:.0f} s per {BUDGET_IMAGES} images; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"{'case':<16}{'ours s':>9}{'images/s':>10}{'budget s':>10}{'ratio':>8}{'cpu s':>8}"
          f"{'idle s':>8}   all runs (s)")
    for workers, values in times.items():
        median = statistics.median(values)
        cpu = statistics.median(cpus[workers])
        print(f"{'cli, ' + str(workers) + ' worker' + ('s' if workers > 1 else ''):<16}"
              f"{median:>9.2f}{num_images / median:>10.1f}{budget:>10.1f}{median / budget:>8.2f}"
              f"{cpu:>8.2f}{cpu / workers:>8.2f}   {', '.join(f'{v:.2f}' for v in values)}")
    print("cpu s: CPU time of the run (all its processes); idle s = cpu s / workers, an estimate "
          "of the wall time on otherwise idle cores.")

    profile = _stage_profile(min(num_images, 60), args.image_size)
    print("\nper image, one process (wall ms; the machine's load inflates it):")
    for key, value in profile.items():
        print(f"  {key:<22}{value:8.1f}")


if __name__ == "__main__":
    main()
