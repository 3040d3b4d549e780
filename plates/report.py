"""The lab's LaTeX report, written from a run directory: ``python -m plates report --run RUN_DIR``.

``Report.7.Detection.Segmentation.tex`` is generated only from the run's own files
(``lab.json``, ``metrics.json`` and each stage's ``metrics.json``, ``reader.json``,
``evaluation/evaluation.json``, the checkpoints and the figures), so every number in it
is the run's: the architecture tables count the parameters of the models loaded from
``best.npz`` and run them on an input of the trained size for the output shapes. It
holds the design of both networks (architecture, loss, training set-up, loss curves),
the evaluation (detection and segmentation metrics), the end-to-end results with the
error analysis, the ResNet comparison when the run holds ``comparison.json``, and the
timings and machine. Every string taken from a file is escaped for LaTeX (``escape``).

The PDF is built with ``pdflatex`` (twice, for the references, in the run directory,
``-interaction=nonstopmode -halt-on-error``) when it is installed; otherwise the
``.tex`` is written and the command prints how to build it.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from nn.io import read_json

__all__ = ["REPORT_NAME", "COMPARISON_FILE", "LatexError", "escape", "build_report",
           "write_report", "compile_report", "main"]

REPORT_NAME = "Report.7.Detection.Segmentation"
COMPARISON_FILE = "comparison.json"
PDFLATEX_TIMEOUT = 300  # seconds per pass

class LatexError(RuntimeError):
    """pdflatex failed on the report (the end of its log in the message)."""


_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
            "|": r"\textbar{}"}
_UNICODE = {"×": r"$\times$", "·": r"$\cdot$", "–": "--", "—": "---", "−": "-",
            "µ": r"$\mu$", "≥": r"$\geq$", "≤": r"$\leq$", "±": r"$\pm$", "°": r"$^\circ$",
            "’": "'", "“": "``", "”": "''", "…": "..."}


def escape(text):
    """``text`` (any value, as ``str``) safe in LaTeX body text: special characters
    escaped, common Unicode symbols spelt in LaTeX, any other non-ASCII character ``?``."""
    out = []
    for char in str(text):
        if char in _SPECIAL:
            out.append(_SPECIAL[char])
        elif char in _UNICODE:
            out.append(_UNICODE[char])
        elif ord(char) > 126 or (ord(char) < 32 and char not in "\n\t"):
            out.append("?")
        else:
            out.append(char)
    return "".join(out)


# =============================================================================== helpers
def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value, digits=3):
    """A number for a table: fixed digits, ``--`` when missing or not finite."""
    return f"{value:.{digits}f}" if _finite(value) else "--"


def _pct(value, digits=1):
    return f"{100 * value:.{digits}f}\\%" if _finite(value) else "--"


def _int(value):
    return f"{int(value):,}".replace(",", "\\,") if _finite(value) else "--"


def _minutes(seconds):
    if not _finite(seconds):
        return "--"
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _table(header, rows, caption, align=None, label=None, fit=False):
    """A booktabs table; cells are LaTeX already (escape strings before). ``header`` None:
    no header row (a two-column list of values); ``fit``: scaled to the text width."""
    columns = len(header) if header else len(rows[0])
    align = align or "l" + "r" * (columns - 1)
    lines = [r"\begin{table}[H]", r"\centering", r"\small"]
    if fit:
        lines.append(r"\resizebox{\textwidth}{!}{%")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    if header:
        lines += [" & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(str(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}" + ("}" if fit else ""),
              rf"\caption{{{caption}}}"]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def _figure(run_dir, relative, caption, width=r"\textwidth"):
    """A figure of the run (a path relative to it), or a sentence saying it is missing."""
    if not os.path.isfile(os.path.join(run_dir, relative)):
        return rf"\emph{{(Figure \texttt{{{escape(relative)}}} is not in the run.)}}" + "\n"
    path = relative.replace(os.sep, "/")
    return "\n".join([r"\begin{figure}[H]", r"\centering",
                      rf"\includegraphics[width={width},height=0.82\textheight,"
                      rf"keepaspectratio]{{{path}}}",
                      rf"\caption{{{caption}}}", r"\end{figure}"])


def _count(module):
    return int(sum(p.data.size for p in module.parameters()))


def _shape(array):
    return r"$" + r" \times ".join(str(s) for s in array.shape[1:]) + r"$"


def _convs(module):
    """The Conv2d layers of a module, as ``kxk/s C`` strings."""
    import nn

    out = []
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            kh, kw, _, cout = sub.weight.shape
            stride = getattr(sub, "stride", 1)
            stride = stride[0] if isinstance(stride, (tuple, list)) else stride
            out.append(f"{kh}x{kw}" + (f"/{stride}" if stride != 1 else "") + f" {cout}")
    return out


def _describe_convs(module):
    convs = _convs(module)
    if not convs:
        return "--"
    groups = []
    for conv in convs:
        if groups and groups[-1][0] == conv:
            groups[-1][1] += 1
        else:
            groups.append([conv, 1])
    return escape(", ".join(f"{n}x conv {c}" if n > 1 else f"conv {c}" for c, n in groups))


# ========================================================================= architectures
def detector_architecture(model, size):
    """Rows ``(part, layers, output, parameters)`` of a RetinaNet on an ``size`` square
    image (shapes from running the model's parts), and the total parameter count."""
    import nn

    rows = []
    x = nn.Tensor(np.zeros((1, size, size, 3), np.float32))
    model.eval()
    with nn.no_grad():
        backbone = model.backbone
        y = backbone.stem(x)
        rows.append(("backbone stem", _describe_convs(backbone.stem) + ", BN, ReLU, max-pool",
                     _shape(y.data), _count(backbone.stem)))
        features = []
        for i, name in enumerate(("layer1", "layer2", "layer3", "layer4")):
            layer = getattr(backbone, name)
            y = layer(y)
            features.append(y)
            rows.append((f"backbone C{i + 2}", f"{len(layer)} basic block(s): "
                         + _describe_convs(layer), _shape(y.data), _count(layer)))
        pyramid = model.fpn(features[model._backbone_slice])
        levels = model.config.levels
        rows.append(("FPN", f"lateral 1x1, top-down nearest x2, smooth 3x3, "
                     f"{len(model.fpn.extra)} extra 3x3/2; levels "
                     + ", ".join(f"P{lv}" for lv in levels),
                     ", ".join(_shape(p.data) for p in pyramid), _count(model.fpn)))
        head = model.head
        cls = head.cls_logits(head.cls_subnet(pyramid[0]))
        box = head.box_deltas(head.box_subnet(pyramid[0]))
    rows.append(("class subnet", _describe_convs(head.cls_subnet) + "; "
                 + _describe_convs(head.cls_logits) + " (A x K)",
                 _shape(cls.data) + f" at P{levels[0]}",
                 _count(head.cls_subnet) + _count(head.cls_logits)))
    rows.append(("box subnet", _describe_convs(head.box_subnet) + "; "
                 + _describe_convs(head.box_deltas) + " (A x 4)",
                 _shape(box.data) + f" at P{levels[0]}",
                 _count(head.box_subnet) + _count(head.box_deltas)))
    return rows, _count(model)


def segmenter_architecture(model, crop_size):
    """Rows ``(part, layers, output, parameters)`` of a U-Net on a crop of ``crop_size``
    (shapes from running the model's parts), and the total parameter count."""
    import nn

    rows = []
    x = nn.Tensor(np.zeros((1,) + tuple(crop_size) + (model.in_channels,), np.float32))
    model.eval()
    with nn.no_grad():
        skips = []
        for i, block in enumerate(model.encoder):
            x = block(x if i == 0 else model.pool(x))
            skips.append(x)
            rows.append((f"encoder {i + 1}", ("" if i == 0 else "max-pool 2, ")
                         + _describe_convs(block) + ", BN, ReLU", _shape(x.data), _count(block)))
        x = skips.pop()
        for i, (up, block) in enumerate(zip(model.upsample, model.decoder)):
            kh, kw, _, cout = up.weight.shape
            x = block(nn.concat([skips.pop(), up(x)], axis=-1))
            rows.append((f"decoder {i + 1}", f"transposed conv {kh}x{kw}/2 {cout}, concat skip, "
                         + _describe_convs(block) + ", BN, ReLU", _shape(x.data),
                         _count(up) + _count(block)))
        y = model.head(x)
    rows.append(("head", _describe_convs(model.head) + " (classes)", _shape(y.data),
                 _count(model.head)))
    return rows, _count(model)


def _architecture_table(rows, total, caption, label=None):
    body = [(escape(part), layers, output, _int(params)) for part, layers, output, params in rows]
    body.append((r"\textbf{total}", "", "", rf"\textbf{{{_int(total)}}}"))
    return _table(["part", "layers", "output (H x W x C)", "parameters"], body, caption,
                  align="lp{6.4cm}p{3.6cm}r", label=label)


def _training_parts(run, stage, rows, figures):
    """A stage's training table (``rows`` of name and value) and its figures
    (``figures``: the arguments of ``_figure`` after the run directory)."""
    return ([_table(None, rows, f"Training of the {stage}.", align="lp{10cm}")]
            + [_figure(run.dir, *figure) for figure in figures])


# ================================================================================ sections
def _preamble(title, subtitle):
    return "\n".join([
        r"\documentclass[11pt]{article}",
        r"\usepackage[a4paper,margin=2.2cm]{geometry}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage{lmodern}",
        r"\usepackage{graphicx}",
        r"\usepackage{booktabs}",
        r"\usepackage{amsmath}",
        r"\usepackage{float}",
        r"\usepackage[hidelinks]{hyperref}",
        rf"\title{{{title}}}",
        rf"\author{{{subtitle}}}",
        r"\date{" + escape(time.strftime("%Y-%m-%d")) + "}",
        r"\begin{document}",
        r"\maketitle",
    ])


class _Run:
    """The files of a run directory, read once."""

    def __init__(self, run_dir):
        self.dir = os.fspath(run_dir)
        self.lab = read_json(os.path.join(self.dir, "lab.json")) or {}
        self.metrics = read_json(os.path.join(self.dir, "metrics.json")) or {}
        self.detector = read_json(os.path.join(self.dir, "detector", "metrics.json"))
        self.segmenter = read_json(os.path.join(self.dir, "segmenter", "metrics.json"))
        self.reader = read_json(os.path.join(self.dir, "reader.json"))
        self.evaluation = read_json(os.path.join(self.dir, "evaluation", "evaluation.json"))
        self.comparison = read_json(os.path.join(self.dir, COMPARISON_FILE))
        self.config = self.lab.get("config") or {}

    def checkpoint(self, stage):
        path = os.path.join(self.dir, stage, "best.npz")
        return path if os.path.isfile(path) else None


def _not_run(what, run):
    return (rf"\emph{{{escape(what)} has not been run yet: continue the run with "
            rf"\texttt{{python -m plates run --out {escape(run.dir)} --resume}}.}}" + "\n")


def _intro(run):
    config = run.config
    quick = bool(config.get("quick"))
    parts = [r"\section{Task and pipeline}",
             "The lab asks for a model that takes a photo of cars or motorbikes and outputs "
             "the properly segmented characters of their license plates, in two stages "
             "(detection, then segmentation) trained from scratch, with no pretrained model. "
             "This report is generated from the files of one run of "
             rf"\texttt{{python -m plates run}} (run directory \texttt{{{escape(run.dir)}}}): "
             "every number below is read from them."]
    if quick:
        parts.append(r"\paragraph{A smoke run.} This run used \texttt{--quick}: a few small "
                     "scenes, tiny networks and a few training steps. It checks that every "
                     "stage runs; its numbers say nothing about accuracy.")
    parts.append(
        "The reader (\\texttt{plates.reader.PlateReader}) works as follows. "
        "(1)~The photo, of any size and aspect ratio, is letterboxed to the detector's "
        "input: its longer side resized to "
        + escape(config.get("detector_size", "--")) +
        " pixels (bilinear, low-pass filtered), the rest padded with black up to a multiple "
        "of the largest stride. (2)~The RetinaNet finds cars and plates; its boxes are "
        "scaled back to the photo. (3)~Each plate with a score above the threshold chosen "
        "on the validation scenes is cut from the \\emph{full-resolution} photo, with a "
        "margin, at the segmenter's fixed crop size, the crop window grown to the crop's "
        "aspect ratio. (4)~The U-Net labels every pixel of all crops of the photo in one "
        "batch as background, one of the ten digits or another character. (5)~Each class "
        "map is read: connected blobs are characters (pieces stacked in a column merged, "
        "blobs twice a character's width cut where they narrow, isolated specks dropped), "
        "ordered in rows top to bottom and left to right. (6)~Boxes and masks of the "
        "characters are mapped back through the crop window to the photo's pixels.")
    parts.append(r"\texttt{python -m plates read --run RUN IMAGES --out OUT} writes "
                 r"\texttt{OUT/plates.json} (per plate its box, score, text and characters) "
                 "and one annotated image per input.")
    return "\n\n".join(parts)


def _data(run):
    config = run.config
    stages = run.lab.get("stages", {})
    render = stages.get("render", {})
    rows = [("scenes", _int(render.get("num_images", config.get("num_images")))),
            ("image size (pixels)", escape(f"{config.get('image_size', '--')} x "
                                           f"{config.get('image_size', '--')}")),
            ("train / val / test scenes", escape(" / ".join(
                str(render.get("splits", {}).get(k, "--")) for k in ("train", "val", "test")))),
            ("cars and motorbikes", _int(render.get("cars"))),
            ("plates", _int(render.get("plates"))),
            ("characters", _int(render.get("characters"))),
            ("scenes without a plate", _int(render.get("images_without_plate"))),
            ("detector copy (longer side)", escape(config.get("detector_size", "--")))]
    text = ("No photo dataset with pixel masks of every character exists that we may use "
            "without a pretrained model, so the scenes are rendered "
            r"(\texttt{plates.synthetic}): streets with 0--3 cars and motorbikes carrying "
            "one-row or two-row plates of several formats, with camera effects (blur, "
            "noise, JPEG), and exact ground truth: boxes, a class map and an instance map "
            "in the Pascal VOC layout. The scenes are rendered at full resolution, as a "
            "photo dataset would be; the detector trains on a copy shrunk once to its input "
            "size, the segmenter on plates cut from the full frames. The split is a seeded "
            "permutation (80/10/10\\%).")
    if not render:
        text += "\n\n" + _not_run("Rendering", run)
    return "\n\n".join([r"\section{Data}", text,
                        _table(None, rows, "The run's data.")])


def _stage_section(run, stage, title, what, describe):
    """The section of a training stage (``"detector"``, ``"segmenter"``): ``title``, then
    the parts ``describe(run, metrics, path)`` writes from the stage's metrics and best
    checkpoint, or a note that ``what`` has not been run while either is missing."""
    metrics, path = getattr(run, stage), run.checkpoint(stage)
    if metrics is None or path is None:
        return "\n\n".join([title, _not_run(what, run)])
    return "\n\n".join([title] + describe(run, metrics, path))


def _detector_section(run):
    return _stage_section(run, "detector", r"\section{Stage one: plate detection (RetinaNet)}",
                          "Detector training", _detector_parts)


def _detector_parts(run, metrics, path):
    from detection.train_retinanet import load_run

    parts = []
    model, _ = load_run(path)
    config, model_config = metrics["config"], metrics["model_config"]
    size = int(config["image_size"])
    rows, total = detector_architecture(model, size)
    anchors = len(model_config["anchor_scales"]) * len(model_config["aspect_ratios"])
    parts.append(
        "A one-stage detector (Lin et al., \\emph{Focal Loss for Dense Object Detection}, "
        "ICCV 2017) from random weights: a small ResNet backbone (basic blocks, BatchNorm), "
        "a feature pyramid over its stages, and two subnets shared by every level, one "
        f"predicting $K = {len(config['classes'] or [])}$ class scores (car, plate) and one "
        f"4 box deltas for each of the $A = {anchors}$ anchors of a location "
        f"(base sizes {escape(', '.join(str(s) for s in model_config['anchor_sizes']))} "
        f"on levels {escape(', '.join('P' + str(lv) for lv in model_config['levels']))}, "
        f"{len(model_config['anchor_scales'])} scales per octave, height/width ratios "
        f"{escape(', '.join(f'{r:g}' for r in model_config['aspect_ratios']))}: plates are "
        "small and wide). Table~\\ref{tab:detector} gives the parts, their outputs on a "
        f"${size} \\times {size}$ input and their parameters, counted on the trained model.")
    parts.append(_architecture_table(rows, total, "The plate detector (RetinaNet), "
                                     f"output shapes for a ${size}\\times{size}$ input.",
                                     label="tab:detector"))
    alpha, gamma = model_config["focal_alpha"], model_config["focal_gamma"]
    parts.append(
        "\\paragraph{Loss.} Anchors with IoU $\\geq$ "
        f"{model_config['fg_iou']:g} to an object are foreground, below "
        f"{model_config['bg_iou']:g} background, between ignored (each object also keeps "
        "its best anchors). The classification loss is the focal loss summed over all "
        "non-ignored anchors and classes, the box loss a smooth-L1 "
        f"($\\beta = {model_config['smooth_l1_beta']:g}$) on the foreground anchors' "
        "encoded deltas, both divided by the number of foreground anchors:\n"
        "\\begin{equation*}\n"
        "\\mathrm{FL}(p_t) = -\\alpha_t (1 - p_t)^{\\gamma} \\log p_t, \\quad "
        f"\\alpha = {alpha:g},\\ \\gamma = {gamma:g}, \\qquad "
        "L = \\frac{1}{N_{\\mathrm{fg}}} \\Big(\\sum \\mathrm{FL} + "
        "\\sum_{\\mathrm{fg}} \\mathrm{smooth}_{L_1}(\\Delta - \\hat\\Delta)\\Big).\n"
        "\\end{equation*}\n"
        "The class bias starts at $-\\log((1 - \\pi) / \\pi)$, "
        f"$\\pi = {model_config['prior_probability']:g}$, so the first predictions are "
        "already mostly background.")
    val, test = metrics.get("val") or {}, metrics.get("test") or {}
    rows = [("optimizer", escape(f"AdamW, lr {config['lr']:g}, weight decay "
                                 f"{config['weight_decay']:g}, gradient norm clipped at "
                                 f"{config['clip_grad']:g}")),
            ("schedule", escape(f"linear warm-up {config['warmup_steps']} steps, cosine "
                                f"to {config['final_lr_factor']:g} x lr at the last step, the "
                                "total fitted to the budget")),
            ("batch, input", escape(f"{config['batch_size']} images of {size} x {size}")),
            ("augmentation", escape(f"random scale {config['min_scale']:g}-"
                                    f"{config['max_scale']:g}, random crop, colour jitter "
                                    f"{config['jitter']:g}; no flip (it mirrors text)")),
            ("budget", escape(", ".join(
                ([f"{config['minutes']:.1f} min"] if config.get("minutes") else [])
                + ([f"{config['steps']} steps"] if config.get("steps") else [])))),
            ("steps done", escape(f"{metrics['steps']} ({metrics['epochs']:.1f} epochs of "
                                  f"{metrics['train_images']} images) in "
                                  f"{_minutes(metrics['train_seconds'])}")),
            ("best checkpoint", escape(f"step {metrics['best_step']} (val mAP)")),
            ("val mAP / AP50 (small copy)", f"{_num(val.get('map'))} / {_num(val.get('map_50'))}"),
            ("test mAP / AP50 (small copy)",
             f"{_num(test.get('map'))} / {_num(test.get('map_50'))}"),
            ("inference (batch 1)", escape(f"{metrics['inference_ms_per_image']:.0f} ms"))]
    parts += _training_parts(run, "detector", rows, [
        ("detector/loss_curves.png", "Detector: training losses (moving mean) and validation AP."),
        ("detector/detections.png", "Detector: detections on validation scenes (small copy).",
         r"0.9\textwidth")])
    return parts


def _segmenter_section(run):
    return _stage_section(run, "segmenter", r"\section{Stage two: digit segmentation (U-Net)}",
                          "Segmenter training", _segmenter_parts)


def _segmenter_parts(run, metrics, path):
    from plates.train_segmenter import load_segmenter

    parts = []
    model, config, _ = load_segmenter(path)
    rows, total = segmenter_architecture(model, config.crop_size)
    h, w = config.crop_size
    parts.append(
        "A U-Net (Ronneberger, Fischer and Brox, MICCAI 2015) labels each pixel of a plate "
        f"crop of ${h} \\times {w}$ pixels (the plate box with a "
        f"{100 * config.crop_padding:g}\\% margin, the window grown to the crop's aspect "
        "ratio, cut from the full frame) as one of 12 classes: background, the ten digits "
        "and ``another character'' (letters and signs, read as \\#). The encoder sees "
        "context, the decoder restores the resolution and the skip connections bring back "
        "the fine strokes. Table~\\ref{tab:segmenter} is counted on the trained model.")
    parts.append(_architecture_table(rows, total, f"The digit segmenter (U-Net), output shapes "
                                     f"for a ${h}\\times{w}$ crop.", label="tab:segmenter"))
    parts.append(
        "\\paragraph{Targets and loss.} A character's label is its \\emph{region}, the filled "
        "convex hull of its ink, area-voted into the crop, with a one-pixel gap kept to its "
        "neighbours (the U-Net paper's separation labels), so that each character is one "
        "blob. The loss is a weighted cross entropy plus a Dice term,\n"
        "\\begin{equation*}\n"
        "L = \\frac{\\sum_i v_i w_{t_i} (-\\log p_{i, t_i})}{\\sum_i v_i w_{t_i}} + "
        f"{config.dice_weight:g} \\cdot \\Big(1 - \\frac{{1}}{{K}} \\sum_k "
        "\\frac{2 \\sum_i p_{ik} y_{ik} + 1}{\\sum_i p_{ik} + \\sum_i y_{ik} + 1}\\Big),\n"
        "\\end{equation*}\n"
        f"with the character classes weighted $w = {config.char_weight:g}$ and the gap "
        f"pixels $v = {config.gap_weight:g}$"
        + (f"; the background under a plate's marks that are not characters (separator dots, "
           f"screws, stickers, the national strip, dealer text: the generator's decoration "
           f"masks) weighs up to $v = {1 + config.decoration_weight:g}$, by the share of the "
           f"pixel they cover" if config.decoration_weight else "")
        + "; pixels outside the image are ignored. The head's "
        "bias starts at the log class frequencies.")
    rows = [("optimizer", escape(f"Adam, lr {config.lr:g}, weight decay {config.weight_decay:g}")),
            ("schedule", escape(f"warm-up {config.warmup_steps} steps, cosine to "
                                f"{config.final_lr_fraction:g} x lr at the last step, the "
                                "total fitted to the budget")),
            ("batch", escape(f"{config.batch_size} crops of {h} x {w}")),
            ("augmentation", escape(f"window shift {config.shift:g}, scale {config.scale:g}; "
                                    f"colour jitter, noise {config.noise:g}; no flip")),
            ("budget", escape(f"{config.minutes:.1f} min" if config.minutes else
                              f"{config.steps} steps")),
            ("steps done", escape(f"{metrics['steps']} in "
                                  f"{_minutes(metrics['train_seconds'])} on "
                                  f"{metrics['train_plates']} training plates")),
            ("best checkpoint", escape(f"step {metrics['best_step']} (val mean IoU)")),
            ("test mean IoU / read exactly (true boxes)",
             f"{_num((metrics.get('test') or {}).get('mean_iou'))} / "
             f"{_pct((metrics.get('test') or {}).get('read_exact'))}"
             + (" (5 shifted passes)" if config.tta else ""))]
    parts += _training_parts(run, "segmenter", rows, [
        ("segmenter/loss_curve.png",
         "Segmenter: training loss and validation mean IoU / plates read."),
        ("segmenter/predictions.png",
         "Segmenter: test crops of true boxes, target and predicted class maps "
         "(digits coloured 0 red to 9 violet, other characters white).", r"0.75\textwidth")])
    return parts


def _evaluation_section(run):
    parts = [r"\section{Evaluation on the held-out test scenes}"]
    results = run.evaluation
    if results is None:
        return "\n\n".join(parts + [_not_run("The end-to-end evaluation", run)])
    settings = results["settings"]
    chosen = (run.reader or {}).get("val") or {}
    beta = chosen.get("beta", 1.0)  # a reader.json without it was chosen by F1
    beta = float(beta) if _finite(beta) else 1.0
    parts.append(
        f"The {results['images']} test scenes go through the reader exactly as a photo "
        "would (\\texttt{plates.evaluate}). Plates are reported from a detector score of "
        f"{_num(settings['plate_threshold'])}, the threshold of best "
        f"F$_{{{beta:g}}}$ of plate detection"
        + (f" (recall weighs {beta:g} times as much as precision: a missed plate is a plate "
           "not read)" if beta != 1 else "")
        + f" on the validation scenes (F1 {_num(chosen.get('f1'))}, precision "
        f"{_num(chosen.get('precision'))}, recall {_num(chosen.get('recall'))}); the "
        "segmenter "
        + ("averages five one-pixel shifts of each crop." if settings.get("tta")
           else "makes one pass per crop."))
    detection = results["detection"]
    names = list(detection["map_per_class"])
    rows = [(escape(name), _num(detection["map_per_class"].get(name)),
             _num(detection["ap50_per_class"].get(name))) for name in names]
    rows.append((r"\textbf{all}", _num(detection["map"]), _num(detection["map_50"])))
    parts.append(r"\subsection{Detection}")
    side = run.config.get("image_size", "--")
    parts.append("COCO average precision of every detection on the full frames (boxes mapped "
                 f"back to the {escape(side)}-pixel frame): AP averages IoU thresholds "
                 "0.5--0.95, AP50 takes 0.5. Recall at 100 detections: "
                 f"{_num(detection.get('mar_100'))}.")
    parts.append(_table(["class", "AP", "AP50"], rows, "Detection on the test frames."))
    seg = results["segmentation"]
    detected, truth = seg["detected"], seg["ground_truth"]
    rows = []
    for name in detected["iou_per_class"]:
        if name == "background":
            continue
        rows.append((escape("#" if name == "char" else name),
                     _num(detected["iou_per_class"][name]),
                     _num(detected["dice_per_class"][name]),
                     _num(truth["iou_per_class"][name]), _num(truth["dice_per_class"][name])))
    rows.append((r"\textbf{mean (characters)}", _num(detected["mean_iou"]),
                 _num(detected["mean_dice"]), _num(truth["mean_iou"]), _num(truth["mean_dice"])))
    rows.append(("background", _num(detected["iou_per_class"]["background"]),
                 _num(detected["dice_per_class"]["background"]),
                 _num(truth["iou_per_class"]["background"]),
                 _num(truth["dice_per_class"]["background"])))
    rows.append(("pixel accuracy", _num(detected["pixel_accuracy"]), "",
                 _num(truth["pixel_accuracy"]), ""))
    rows.append(("crops", _int(detected["crops"]), "", _int(truth["crops"]), ""))
    parts.append(r"\subsection{Segmentation}")
    parts.append("Per-class IoU and Dice of the class maps, on the crops of the "
                 "\\emph{detected} plates (what the reader segments; their ground truth is "
                 "the scene's character regions sampled into the same window, so a loose "
                 "box costs pixels too) and, beside them, on crops of the true plate boxes "
                 "(the segmenter alone).")
    parts.append(_table(["class", "IoU", "Dice", "IoU (true box)", "Dice (true box)"], rows,
                        "Segmentation of the plate crops (test scenes)."))
    end = results["end_to_end"]
    chars = end["characters"]
    rows = [("true plates", _int(end["plates"])),
            ("read exactly (every true plate counts)",
             f"{_pct(end['read_exact'])} ({_int(end['read'])})"),
            ("plates detected (IoU $\\geq$ 0.5)", _pct(end["plate_recall"])),
            ("reported plates", _int(end["reported"])),
            ("precision: reported plates on a true plate", _pct(end["plate_precision"])),
            ("precision: reported plates read right", _pct(end["read_precision"])),
            ("characters: precision / recall (same label, IoU $\\geq$ 0.5)",
             f"{_pct(chars['precision'])} / {_pct(chars['recall'])}"),
            ("segmenter alone: true boxes read exactly", _pct(truth.get("read_exact"))),
            ("reading time per photo (median, decode to JSON)",
             escape(f"{results['timing']['read_ms_median']:.0f} ms")
             if _finite(results["timing"].get("read_ms_median")) else "--")]
    parts.append(r"\subsection{End to end}")
    parts.append("A plate is read when a reported plate matches it (IoU $\\geq$ 0.5, one to "
                 "one, by decreasing score) and its text equals the truth spelt the "
                 "segmenter's way (digits, \\# for any other character, rows separated by "
                 "a space). A plate the detector missed is a failure.")
    parts.append(_table(None, rows, "End-to-end reading of the test plates.",
                        align="lr"))
    parts.append(_errors(results, run))
    return "\n\n".join(parts)


_CAUSES = {
    "correct": "read exactly",
    "missed plate": "no reported plate at IoU $\\geq$ 0.5",
    "loose/tight box": "matched box with IoU $<$ 0.7",
    "merged characters": "one predicted character covers two true ones",
    "split character": "two predicted characters inside one true one",
    "missed character": "a true character no prediction overlaps",
    "wrong class": "a matched character of another class",
    "extra character": "a predicted character inside no true one",
    "order or rows": "right characters, wrong order or rows",
}


def _errors(results, run):
    total = max(results["end_to_end"]["plates"], 1)
    rows = [(escape(name), _CAUSES.get(name, ""), _int(count), _pct(count / total))
            for name, count in results["errors"].items()]
    parts = [r"\subsection{Error analysis}",
             "Each true plate gets one outcome: the first cause that applies, in the order "
             "of the table.",
             _table(["outcome", "test", "plates", "share"], rows,
                    "Outcome of every true test plate.", align="llrr")]
    rows = [(escape(b["bin"]), _int(b["plates"]), _pct(b["detected"]), _num(b["mean_box_iou"]),
             _pct(b["read_exact"]), _pct(b["read_on_truth_box"])) for b in results["by_width"]]
    parts.append(_table(["plate width", "plates", "detected", "box IoU", "read",
                         "read (true box)"], rows,
                        "By plate width in the frame: detection, mean IoU of the matched boxes, "
                        "exact reading end to end and on the true boxes."))
    parts.append(_figure(run.dir, "evaluation/end_to_end.png",
                         "Outcome of the test plates, and reading by plate width."))
    parts.append(_figure(run.dir, "evaluation/failures.png",
                         "Test plates read wrong: the frame around the plate (true box green, "
                         "detected red), the crop and the predicted class map.",
                         width=r"0.85\textwidth"))
    folder = os.path.join(run.dir, "evaluation")
    examples = sorted(f for f in os.listdir(folder) if f.startswith("example_")
                      and f.endswith(".jpg")) if os.path.isdir(folder) else []
    if examples:
        width = min(0.32, 0.96 / len(examples))
        images = "\n".join(rf"\includegraphics[width={width:.2f}\textwidth]{{evaluation/{name}}}"
                           for name in examples)
        scenes = ", ".join(escape(name[len("example_"):-4]) for name in examples)
        parts.append("\n".join([
            r"\begin{figure}[H]", r"\centering", images,
            rf"\caption{{Test scenes {scenes} as \texttt{{python -m plates read}} draws them: "
            "plate boxes, text and score, character masks in the frame's pixels.}",
            r"\end{figure}"]))
    return "\n\n".join(parts)


def _flatten(value, prefix=""):
    """Nested dicts/lists as ``(key path, value)`` pairs."""
    if isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            pairs += _flatten(item, f"{prefix}/{key}" if prefix else str(key))
        return pairs
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        pairs = []
        for i, item in enumerate(value):
            pairs += _flatten(item, f"{prefix}[{i}]")
        return pairs
    return [(prefix, value)]


def _cell(value):
    if isinstance(value, float):
        return _num(value, 4)
    if isinstance(value, list):
        return escape(", ".join(str(v) for v in value))
    return escape(value)


def _compare_tables(comparison):
    """The tables and the summary of a ``python -m plates compare`` file (``plates.compare``)."""
    from plates.compare import budget_text, summarize

    parts = ["Each stage was trained again with a ResNet-18 network on this run's data, "
             "everything else equal (\\texttt{python -m plates compare}): in the same time "
             "budget, and in as many steps as the small network took. Accuracy is measured on "
             "the held-out test scenes (the detector on its small copy, the segmenter on crops "
             "of the true plate boxes); parameters are counted on the models; a training step "
             "and inference are timed with the two networks alternating call by call in one "
             "process (medians). Rows marked $^*$ reuse a run that already had the "
             "configuration (the lab's own networks, or the time run that ended at that step)."]
    if not comparison.get("complete"):
        parts.append(r"\emph{The comparison is not finished: the rows below are those done.}")
    for task in comparison.get("tasks", []):
        rows = [r for r in comparison.get("rows", []) if r.get("task") == task]
        if not rows:
            continue
        unit = escape(rows[0].get("inference_unit") or "")
        header = ["network", "budget", "steps", "training", "parameters", "step ms",
                  f"inference ms / {unit}"]
        if task == "detector":
            names = list(dict.fromkeys(k for r in rows
                                       for k in (r["test"].get("ap50_per_class") or {})))
            header += ["mAP"] + [f"AP50 {escape(name)}" for name in names]
        else:
            header += ["mean IoU", "read exactly"]
        body = []
        for r in rows:
            test = r["test"]
            cells = [escape(r["label"]) + (r"$^*$" if r.get("reused") else ""),
                     escape(budget_text(r)), _int(r.get("steps")),
                     escape(_minutes(r.get("train_seconds"))), _int(r.get("parameters")),
                     _num(r.get("step_ms"), 0), _num(r.get("inference_ms"), 0)]
            if task == "detector":
                cells += [_num(test.get("map"))] + [
                    _num((test.get("ap50_per_class") or {}).get(name)) for name in names]
            else:
                cells += [_num(test.get("mean_iou")), _pct(test.get("read_exact"))]
            body.append(cells)
        if task == "detector":
            caption = ("Detector: RetinaNet, small backbone against ResNet-18 (test split of "
                       "the small copy).")
        else:
            shifts = ", five shifted passes" if rows[0]["test"].get("tta") else ""
            caption = ("Segmenter: U-Net against the U-Net with a ResNet-18 encoder (test "
                       f"plates, true boxes{shifts}).")
        parts.append(_table(header, body, caption, align="l" + "r" * (len(header) - 1),
                            fit=True))
    paragraphs = [escape(paragraph) for paragraph in summarize(comparison)]
    if paragraphs:
        parts.append(r"\paragraph{What the numbers say.} " + "\n\n".join(paragraphs))
    return parts


def _comparison_section(run):
    parts = [r"\section{Comparison with a ResNet backbone}"]
    comparison = run.comparison
    if comparison is None:
        parts.append(
            "The lab's extra asks for a comparison with a ResNet. This run holds no "
            f"\\texttt{{{COMPARISON_FILE}}}: the comparison has not been run. "
            f"\\texttt{{python -m plates compare --run {escape(run.dir)}}} trains both stages "
            "again with ResNet-18 (the detector's backbone, the U-Net's encoder) in the same "
            "time and in the same number of steps, and writes "
            f"\\texttt{{{escape(os.path.join(run.dir, COMPARISON_FILE))}}}; "
            f"then \\texttt{{python -m plates report --run {escape(run.dir)}}} adds it here.")
        return "\n\n".join(parts)
    if isinstance(comparison, dict) and comparison.get("kind") == "plates-compare":
        return "\n\n".join(parts + _compare_tables(comparison))
    parts.append(f"From \\texttt{{{COMPARISON_FILE}}} in the run directory.")
    rows = comparison.get("rows") if isinstance(comparison, dict) else None
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        flat = [dict(_flatten(r)) for r in rows]
        header = list(dict.fromkeys(k for r in flat for k in r))
        body = [[_cell(r.get(k, "")) for k in header] for r in flat]
        parts.append(_table([escape(h) for h in header], body, "The comparison.",
                            align="l" * len(header), fit=len(header) > 6))
    else:
        pairs = _flatten(comparison)
        body = [(escape(k), _cell(v)) for k, v in pairs
                if not isinstance(v, (dict, list)) or isinstance(v, list)]
        parts.append(_table(["", "value"], body, "The comparison.", align="ll"))
    figures = comparison.get("figures", []) if isinstance(comparison, dict) else []
    for figure in figures if isinstance(figures, list) else [figures]:
        if isinstance(figure, str):
            parts.append(_figure(run.dir, figure, escape(figure)))
    return "\n\n".join(parts)


def _timing_section(run):
    stages = run.lab.get("stages", {})
    rows = [(escape(name), escape(_minutes(record.get("seconds"))),
             _int(record.get("sessions"))) for name, record in stages.items()]
    total = sum(r.get("seconds", 0) for r in stages.values())
    rows.append((r"\textbf{total}", escape(_minutes(total)), ""))
    machine = run.metrics.get("machine") or {}
    sessions = run.lab.get("sessions", [])
    first = (sessions[0].get("machine") if sessions else None) or machine
    loads = [s["machine"].get("load_average") for s in sessions if s.get("machine")]
    machine_rows = [("CPU", escape(first.get("cpu", "--"))),
                    ("cores", escape(first.get("cores", "--"))),
                    ("Python / NumPy", escape(f"{first.get('python', '--')} / "
                                              f"{first.get('numpy', '--')}")),
                    ("platform", escape(first.get("platform", "--"))),
                    ("load average at the start of each session (1, 5, 15 min)",
                     escape("; ".join(", ".join(f"{v:g}" for v in load) for load in loads
                                      if load) or "--"))]
    config = run.config
    return "\n\n".join([
        r"\section{Timings and machine}",
        f"Training budget {escape(config.get('minutes', '--'))} minutes, "
        f"{_pct(config.get('detector_share', float('nan')), 0)} for the detector; the "
        "stages below are wall-clock times (rendering, loading and evaluating included).",
        _table(["stage", "time", "sessions"], rows, "Wall clock of each stage."),
        _table(None, machine_rows, "The machine.", align="lp{9cm}"),
        r"\section{Reproducing}",
        "\\begin{verbatim}\n"
        + f"python -m plates run --out {run.dir} --minutes {config.get('minutes', 15)} "
          f"--seed {config.get('seed', 0)}" + (" --quick" if config.get("quick") else "")
        + f"\npython -m plates read --run {run.dir} photo.jpg --out readings\n"
        + f"python -m plates report --run {run.dir}\n"
        + "\\end{verbatim}"])


def build_report(run_dir):
    """The report's LaTeX source for a run directory (str)."""
    run = _Run(run_dir)
    evaluation = run.evaluation or {}
    end = evaluation.get("end_to_end") or {}
    summary = ""
    if end:
        summary = ("\\begin{abstract}\n"
                   f"On {evaluation['images']} held-out test scenes the two-stage reader "
                   f"reads {_pct(end['read_exact'])} of the {end['plates']} plates exactly "
                   f"(plate AP50 {_num(evaluation['detection']['ap50_per_class'].get('plate'))}, "
                   "character mean IoU on the detected crops "
                   f"{_num(evaluation['segmentation']['detected']['mean_iou'])}). Both "
                   "networks were trained from scratch on rendered street scenes.\n"
                   "\\end{abstract}")
    title = r"Labwork 7: License Plate Detection and Digit Segmentation"
    subtitle = (r"detseg, generated by \texttt{python -m plates report} from the run "
                rf"\texttt{{{escape(run.dir)}}}")
    sections = [_preamble(title, subtitle), summary, _intro(run), _data(run),
                _detector_section(run), _segmenter_section(run), _evaluation_section(run),
                _comparison_section(run), _timing_section(run), r"\end{document}"]
    return "\n\n".join(s for s in sections if s) + "\n"


# ============================================================================== building
def compile_report(run_dir, quiet=True):
    """Build the PDF with ``pdflatex`` (two passes) in the run directory.

    Returns:
        str: the PDF's path.
    Raises:
        FileNotFoundError: no ``pdflatex``. LatexError: pdflatex failed (the end of its
        log in the message).
    """
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        raise FileNotFoundError("pdflatex is not installed")
    command = [pdflatex, "-interaction=nonstopmode", "-halt-on-error", f"{REPORT_NAME}.tex"]
    for _ in range(2):
        done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True,
                              errors="replace", timeout=PDFLATEX_TIMEOUT, check=False)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-25:])
            raise LatexError(f"pdflatex failed on {os.path.join(run_dir, REPORT_NAME)}.tex "
                               f"(status {done.returncode}):\n{tail}")
    if not quiet:
        print(f"built {os.path.join(run_dir, REPORT_NAME)}.pdf")
    return os.path.join(run_dir, f"{REPORT_NAME}.pdf")


def write_report(run_dir, compile_pdf=True, quiet=True):
    """Write ``Report.7.Detection.Segmentation.tex`` into the run, and its PDF when
    ``pdflatex`` exists (and ``compile_pdf``).

    Returns:
        dict: ``tex`` (path), ``pdf`` (path or None), ``compiled`` (bool), ``message``.
    Raises:
        FileNotFoundError: ``run_dir`` is no directory. LatexError: pdflatex failed.
    """
    from nn.io import atomic_write_text

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    tex = os.path.join(run_dir, f"{REPORT_NAME}.tex")
    atomic_write_text(tex, build_report(run_dir))
    result = {"tex": tex, "pdf": None, "compiled": False, "message": f"wrote {tex}"}
    if not compile_pdf:
        return result
    if shutil.which("pdflatex") is None:
        result["message"] = (
            f"wrote {tex}; pdflatex is not installed, so no PDF. Install TeX Live "
            "(apt-get install texlive-latex-base texlive-latex-recommended "
            f"texlive-fonts-recommended) and build it with: cd {run_dir} && pdflatex "
            f"{REPORT_NAME}.tex && pdflatex {REPORT_NAME}.tex")
        return result
    result.update(pdf=compile_report(run_dir, quiet=quiet), compiled=True)
    result["message"] = f"wrote {tex} and {result['pdf']}"
    return result


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="python -m plates report")
    parser.description = f"Write {REPORT_NAME}.tex (and its PDF) from a lab run directory."
    parser.add_argument("--run", required=True, help="the run directory (python -m plates run)")
    parser.add_argument("--no-pdf", action="store_true", help="write the .tex only")
    return parser


def main(args):
    """``python -m plates report`` with parsed ``args``; returns the exit status."""
    try:
        result = write_report(args.run, compile_pdf=not args.no_pdf)
    except FileNotFoundError as exc:
        print(f"plates report: {exc}", file=sys.stderr)
        return 2
    except LatexError as exc:
        print(f"plates report: {exc}", file=sys.stderr)
        return 1
    print(result["message"])
    return 0
