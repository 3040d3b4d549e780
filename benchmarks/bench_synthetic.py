"""Speed of the synthetic plate generator: CPU milliseconds per scene, against an older
version of itself, and where the time goes.

Run as a script::

    python benchmarks/bench_synthetic.py                          # stages, 256 and 1024 px
    python benchmarks/bench_synthetic.py --reference e80081d      # ours vs that commit's
    python benchmarks/bench_synthetic.py --reference e80081d --plates plain   # same content
    python benchmarks/bench_synthetic.py --cli --num-images 200   # the whole command

What is timed:

- ``--reference REV``: ``render_scene`` of this checkout against the one of git revision
  ``REV`` (its ``plates/synthetic`` extracted from git into a temporary package), on the
  same seeds, in blocks of scenes, each block rendered by a fresh process (so that one
  version's memory use does not weigh on the other's) and the versions alternating
  block by block (so that a slow moment of the shared machine hits both). The clock is
  the process's CPU time (user + system, ``getrusage``), which other engineers' load
  inflates far less than wall time; the ratio is reference / ours (> 1: ours is
  faster). Each process is warmed up first by 150 scenes of 256 px (font discovery,
  font and glyph caches: the steady state of a long run). The scenes
  differ between the versions (same seeds, other draws), so many scenes are averaged.
- stages: the CPU time of each stage of ``render_scene`` (background, distractors,
  vehicles, plates, camera effects, labels) and of writing one example (JPEG + PNGs +
  XML), per scene.
- ``--cli``: the whole command a user runs, wall clock and CPU, in a fresh process:
  ``python -m plates.synthetic plates --out TMP --num-images N --workers K --quiet``.

The machine is shared by several engineers: read medians and ratios, not single figures.
"""
import argparse
import collections
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _extract_reference(revision, directory):
    """Write ``plates/synthetic`` of git revision ``revision`` into ``directory`` as the
    package ``synthetic_reference`` (its imports of ``plates.synthetic`` renamed)."""
    listing = subprocess.run(["git", "ls-tree", "--name-only", revision, "plates/synthetic/"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    name = "synthetic_reference"
    package = os.path.join(directory, name)
    os.makedirs(package)
    for path in listing:
        if not path.endswith(".py"):
            continue
        source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
        with open(os.path.join(package, os.path.basename(path)), "w") as handle:
            handle.write(re.sub(r"\bplates\.synthetic\b", name, source))


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _mix(name):
    """The plate mix of ``--plates``: the default one, or plain plates (no strip, sticker,
    screw, frame, light or dirt; light characters on dark plates one time in five, as
    before these features existed)."""
    from plates.synthetic.plates import PlateMix
    return PlateMix() if name == "default" else PlateMix.only(dark=0.2)


def _render_block(version, directory, size, start, count, warmup, plates):
    """Worker: render scenes ``start .. start + count`` with one version; CPU per scene."""
    from plates.synthetic import generate

    if version == "reference":
        sys.path.insert(0, directory)
        import importlib
        render = importlib.import_module("synthetic_reference.scene").render_scene
    else:
        from plates.synthetic import scene
        mix = _mix(plates)

        def render(rng, size):
            return scene.render_scene(rng, size, plate_mix=mix)
    # Warm-up at 256 px (cheap): font discovery, fonts and glyphs cached, as in the
    # steady state of a run of thousands of images (glyphs do not depend on image size).
    for index in range(warmup):
        render(generate.image_rng(10**6, index), min(size, 256))
    before = resource.getrusage(resource.RUSAGE_SELF)
    for index in range(start, start + count):
        render(generate.image_rng(0, index), size)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": 1000 * (after.ru_utime - before.ru_utime) / count,
            "system": 1000 * (after.ru_stime - before.ru_stime) / count}


def compare(directory, size, scenes, chunk, warmup, plates):
    """Per-scene CPU ms (user + system) of the reference and of ours, each block of
    ``chunk`` scenes rendered in a fresh process (one version's memory use does not
    weigh on the other's), the versions alternating block by block."""
    times = {"reference": [], "ours": []}
    for block, start in enumerate(range(0, scenes, chunk)):
        count = min(chunk, scenes - start)
        order = ("reference", "ours") if block % 2 == 0 else ("ours", "reference")
        for version in order:
            output = subprocess.run(
                [sys.executable, __file__, "--worker", version, "--worker-dir", directory,
                 "--image-size", str(size), "--start", str(start), "--count", str(count),
                 "--warmup", str(warmup), "--plates", plates],
                cwd=ROOT, check=True, capture_output=True, text=True).stdout
            times[version].append(json.loads(output.strip().splitlines()[-1]))
    return times


def stage_profile(size, scenes, warmup, mix):
    """CPU ms per scene of each stage of render_scene, and of writing the example."""
    from plates.synthetic import generate, scene
    from detection.datasets.voc import write_voc_example

    totals = collections.Counter()
    stages = {"layout": "_place_vehicles", "background": "render_background",
              "distractors": "draw_distractors", "vehicles": "_draw_vehicle",
              "plates": "_draw_plate", "camera effects": "apply_camera_effects",
              "labels": "_finalize"}
    originals = {name: getattr(scene, name) for name in stages.values()}

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            before = _cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[key] += _cpu() - before
        return wrapper

    for key, name in stages.items():
        setattr(scene, name, timed(key, originals[name]))
    try:
        for index in range(warmup):     # at 256 px, as in _render_block
            scene.render_scene(generate.image_rng(10**6, index), min(size, 256), plate_mix=mix)
        totals.clear()
        with tempfile.TemporaryDirectory() as tmp:
            for index in range(scenes):
                before = _cpu()
                image, objects, class_mask, instance_mask = scene.render_scene(
                    generate.image_rng(0, index), size, plate_mix=mix)
                middle = _cpu()
                write_voc_example(tmp, f"{index:06d}", image, objects, class_mask, instance_mask)
                totals["render_scene (all)"] += middle - before
                totals["write (jpg + png + xml)"] += _cpu() - middle
    finally:
        for name, fn in originals.items():
            setattr(scene, name, fn)
    return {key: 1000 * value / scenes for key, value in totals.items()}


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(num_images, workers, image_size):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, nargs="+", default=(256, 1024))
    parser.add_argument("--scenes", type=int, default=None,
                        help="scenes per size (default 300 at <= 256 px, 80 above)")
    parser.add_argument("--reference", default=None, metavar="REV",
                        help="compare with plates/synthetic of this git revision")
    parser.add_argument("--chunk", type=int, default=None,
                        help="scenes per process (default 50 at <= 256 px, 20 above)")
    parser.add_argument("--plates", choices=("default", "plain"), default="default",
                        help="our plate mix: the default, or plain plates as before the "
                             "plate features (to compare the same content)")
    parser.add_argument("--no-stages", action="store_true", help="skip the stage profile")
    parser.add_argument("--cli", action="store_true", help="also time the whole command")
    parser.add_argument("--num-images", type=int, default=200, help="images of the CLI run")
    parser.add_argument("--workers", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--worker", choices=("reference", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_render_block(args.worker, args.worker_dir, args.image_size[0],
                                       args.start, args.count, args.warmup, args.plates)))
        return
    print(f"synthetic scenes, {args.plates} plates; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; CPU ms per scene (user + system)")
    temporary = tempfile.mkdtemp()
    try:
        if args.reference:
            _extract_reference(args.reference, temporary)
        for size in args.image_size:
            small = size <= 256
            scenes = args.scenes or (300 if small else 80)
            warmup = 150
            if args.reference:
                chunk = args.chunk or (50 if small else 20)
                times = compare(temporary, size, scenes, chunk, warmup, args.plates)
                total = {v: [t["user"] + t["system"] for t in ts] for v, ts in times.items()}
                means = {v: statistics.fmean(ts) for v, ts in total.items()}
                ratios = [r / o for r, o in zip(total["reference"], total["ours"])]
                print(f"\n{size} px, {scenes} scenes, {chunk} per process: reference "
                      f"{args.reference} {means['reference']:.1f} ms, ours "
                      f"{means['ours']:.1f} ms, ratio {means['reference'] / means['ours']:.2f}x")
                for version, ts in times.items():
                    print(f"  {version:<10} user {statistics.fmean(t['user'] for t in ts):6.1f}"
                          f"  system {statistics.fmean(t['system'] for t in ts):5.1f}")
                print(f"  per-block ratios: median {statistics.median(ratios):.2f}, "
                      f"range {min(ratios):.2f}..{max(ratios):.2f}")
            if not args.no_stages:
                profile = stage_profile(size, min(scenes, 100), warmup, _mix(args.plates))
                print(f"\n{size} px, stages of ours (CPU ms per scene, in this process):")
                for key, value in sorted(profile.items(), key=lambda kv: -kv[1]):
                    print(f"  {key:<26}{value:8.2f}")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    if args.cli:
        for size in args.image_size:
            for workers in args.workers:
                wall, cpu = run_cli(args.num_images, workers, size)
                print(f"\ncli, {args.num_images} images of {size} px, {workers} worker(s): "
                      f"{wall:.1f} s wall, {cpu:.1f} s CPU, {1000 * cpu / args.num_images:.1f} "
                      f"CPU ms per image")


if __name__ == "__main__":
    main()
