"""02 — Convolution, transposed convolution, and cropping boxes out of feature maps.

Every detector and segmenter of the lecture is built from three operations on
feature maps, and this tutorial takes each apart on a real (drawn) image:

1. **Convolution** slides small filters over the image. Computed as *im2col + one
   matrix product*: copy every window into a row of a matrix, multiply by the
   filters. We design filters (edges, blur), look at their feature maps, and let
   gradient descent find a filter by itself.
2. **Transposed convolution** ("deconvolution" in the FCN / U-Net slides) runs a
   convolution backwards: each input pixel *paints* a weighted copy of the kernel
   into a larger output. With a fixed kernel it is nearest or bilinear upsampling;
   with a learned kernel it is *learnable upsampling*.
3. **RoIPool vs RoIAlign**: Fast/Faster R-CNN crop a fixed-size feature (7×7) for
   each proposed box with RoIPool, which rounds the box and its bins to the
   feature grid. Mask R-CNN replaced it by RoIAlign, which samples the continuous
   box with bilinear interpolation. We draw both and measure what the rounding costs.

Run it with ``python examples/02_convolution.py`` (``--quick`` for a few-second
run; ``--out DIR`` chooses where the figures go, ``out/`` by default).
"""
import argparse
import os
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
import nn.functional as F  # noqa: E402

# %% Configuration
# A short block of named constants; --quick shrinks the training runs for CI.
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="few training steps (seconds)")
parser.add_argument("--out", default="out", help="directory for the figures")
args = parser.parse_args()

SEED = 0
IMAGE_SIZE = (320, 240)              # width, height in pixels
PLATE_BOX = (123, 157, 187, 175)     # x1, y1, x2, y2 of the licence plate we draw
FILTER_STEPS = 150  # a 3x3 filter on one image: cheap even under --quick
UPSAMPLE_STEPS = 40 if args.quick else 400
ROI_STRIDE = 8                       # the feature map of section 3 is 8x smaller
ROI_BINS = (2, 4)                    # bins drawn in the RoI figure (oh, ow)
nn.manual_seed(SEED)
start_time = time.perf_counter()


def save_figure(figure, name):
    """Write ``figure`` to ``args.out/name`` atomically (temporary file, then rename)."""
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, name)
    fd, tmp = tempfile.mkstemp(dir=args.out, suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    plt.close(figure)
    print(f"saved {path}")


# %% 0. An image to look at
# No download: we draw a street scene with Pillow — sky, road, a house, a car
# and a licence plate with text, enough edges and textures for filters to find.
def draw_scene(width, height):
    """An RGB street scene as float32 in [0, 1], shape (H, W, 3)."""
    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
    horizon = int(0.62 * height)
    for row in range(horizon):  # sky: a vertical gradient
        t = row / horizon
        draw.line([(0, row), (width, row)], fill=(int(120 + 110 * t), int(170 + 70 * t), 235))
    draw.rectangle([0, horizon, width, height], fill=(95, 95, 100))            # road
    for x0 in range(0, width, 48):                                              # lane marks
        draw.rectangle([x0, height - 18, x0 + 24, height - 14], fill=(235, 235, 235))
    draw.ellipse([262, 18, 302, 58], fill=(255, 215, 60))                       # sun
    draw.rectangle([14, 70, 84, horizon], fill=(190, 120, 80))                  # house
    draw.polygon([(8, 72), (49, 34), (90, 72)], fill=(140, 40, 40))             # roof
    draw.rectangle([40, 110, 58, horizon], fill=(90, 60, 40))                   # door
    draw.rounded_rectangle([60, 118, 250, 188], radius=16, fill=(200, 30, 40))  # car body
    draw.polygon([(95, 120), (120, 84), (195, 84), (222, 120)], fill=(180, 25, 35))
    draw.polygon([(104, 118), (124, 90), (155, 90), (155, 118)], fill=(170, 210, 235))
    draw.polygon([(161, 118), (161, 90), (192, 90), (212, 118)], fill=(170, 210, 235))
    for cx in (100, 212):                                                       # wheels
        draw.ellipse([cx - 21, 168, cx + 21, 210], fill=(25, 25, 25))
        draw.ellipse([cx - 9, 180, cx + 9, 198], fill=(160, 160, 160))
    x1, y1, x2, y2 = PLATE_BOX
    draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=(245, 245, 245), outline=(0, 0, 0))
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 12)
    except OSError:  # no TrueType font installed: Pillow's built-in bitmap font
        font = ImageFont.load_default()
    draw.text(((x1 + x2) / 2, (y1 + y2) / 2), "29A 123", fill=(0, 0, 0), font=font, anchor="mm")
    return np.asarray(canvas, dtype=np.float32) / 255.0


image = draw_scene(*IMAGE_SIZE)                                  # (H, W, 3)
gray = image @ np.array([0.299, 0.587, 0.114], np.float32)      # (H, W) luma
x = gray[None, :, :, None]                                       # (1, H, W, 1): N, H, W, C
print(f"image {image.shape}, grayscale batch {x.shape} (channels-last: N, H, W, C)")

# %% 1. Convolution = im2col + one matrix product
# A convolution layer with filters W of shape (kh, kw, C_in, C_out) computes
#   y[n, i, j, o] = Σ_{a, b, c} x[n, i + a, j + b, c] · W[a, b, c, o]
# (deep-learning "convolution" is a cross-correlation: the kernel is not flipped).
# Instead of four nested loops, copy each kh×kw×C window into one row of a
# "column matrix" and the whole layer is ONE matrix product:
#   cols (N·Ho·Wo, kh·kw·C) @ W.reshape(kh·kw·C, C_out) -> (N·Ho·Wo, C_out)
# and the result, reshaped, already is the next channels-last feature map.


def im2col(x, k):
    """Every k×k window of x (N, H, W, C) as a row: (N·Ho·Wo, k·k·C), no padding."""
    n, h, w, c = x.shape
    windows = sliding_window_view(x, (k, k), axis=(1, 2))       # (N, Ho, Wo, C, k, k), a view
    windows = windows.transpose(0, 1, 2, 4, 5, 3)               # (N, Ho, Wo, k, k, C)
    return windows.reshape(-1, k * k * c)                       # (N·Ho·Wo, k·k·C), copied


def conv_by_loops(x, weight):
    """The definition, one output pixel at a time (slow, for checking)."""
    k = weight.shape[0]
    n, h, w, c = x.shape
    out = np.zeros((n, h - k + 1, w - k + 1, weight.shape[3]), np.float32)
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            window = x[:, i:i + k, j:j + k, :]                  # (N, k, k, C)
            out[:, i, j, :] = np.tensordot(window, weight, axes=([1, 2, 3], [0, 1, 2]))
    return out


tiny = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
print("\nA 4x4 input has 2x2 = 4 windows of 3x3: im2col gives a 4 x 9 matrix")
print(im2col(tiny, 3))

rng = np.random.default_rng(SEED)
weight = rng.standard_normal((3, 3, 1, 4)).astype(np.float32)   # 4 random 3x3 filters (HWIO)
crop = x[:, :96, :128]
tic = time.perf_counter()
by_loops = conv_by_loops(crop, weight)
loop_seconds = time.perf_counter() - tic
tic = time.perf_counter()
cols = im2col(crop, 3)                                           # (1·94·126, 9)
by_gemm = (cols @ weight.reshape(9, 4)).reshape(1, 94, 126, 4)  # one GEMM, then NHWC
gemm_seconds = time.perf_counter() - tic
by_library = F.conv2d(crop, weight).data
print(f"\nconv on a 96x128 crop: loops {1e3 * loop_seconds:.1f} ms, "
      f"im2col + GEMM {1e3 * gemm_seconds:.2f} ms")
print(f"max |loops - im2col| = {np.abs(by_loops - by_gemm).max():.2e}, "
      f"max |im2col - F.conv2d| = {np.abs(by_gemm - by_library).max():.2e}")

# %% 2. Designed filters and their feature maps
# Each filter responds to one pattern. Sobel filters are derivatives (edges
# across x or y), the Laplacian is a second derivative (blobs and thin lines),
# box and Gaussian filters average (blur), "sharpen" adds the Laplacian back.
# They are stacked into one HWIO weight (5, 5, 1, 6); 3x3 ones are zero-padded.
def centred(kernel, size=5):
    padded = np.zeros((size, size), np.float32)
    offset = (size - kernel.shape[0]) // 2
    padded[offset:offset + kernel.shape[0], offset:offset + kernel.shape[1]] = kernel
    return padded


sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 4
gaussian_1d = np.array([1, 4, 6, 4, 1], np.float32) / 16
bank = {
    "Sobel x": centred(sobel_x),
    "Sobel y": centred(sobel_x.T),
    "Laplacian": centred(np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)),
    "box blur 5x5": np.full((5, 5), 1 / 25, np.float32),
    "Gaussian 5x5": np.outer(gaussian_1d, gaussian_1d),
    "sharpen": centred(np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)),
}
filters = np.stack(list(bank.values()), axis=-1)[:, :, None, :]  # (5, 5, 1, 6)
features = F.conv2d(x, filters, padding=2).data                   # (1, H, W, 6), "same" size
edges = np.hypot(features[0, :, :, 0], features[0, :, :, 1])     # gradient magnitude
print(f"\nfilter bank {filters.shape} -> feature maps {features.shape}")

figure, axes = plt.subplots(2, 7, figsize=(17, 5.2), gridspec_kw={"height_ratios": [0.8, 1]})
axes[0, 0].imshow(image)
axes[0, 0].set_title("input image")
axes[1, 0].imshow(edges, cmap="gray", vmax=np.percentile(edges, 99.5))
axes[1, 0].set_title("edge strength\n√(Sobel x² + Sobel y²)", fontsize=9)
for col, (name, kernel) in enumerate(bank.items(), start=1):
    limit = np.abs(kernel).max()
    axes[0, col].imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[0, col].set_title(f"filter: {name}", fontsize=9)
    response = features[0, :, :, col - 1]
    if name in ("Sobel x", "Sobel y", "Laplacian"):  # signed responses: red > 0, blue < 0
        bound = np.percentile(np.abs(response), 99.5)
        axes[1, col].imshow(response, cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        axes[1, col].imshow(response, cmap="gray", vmin=0, vmax=1)
    axes[1, col].set_title(f"feature map: {name}", fontsize=9)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
figure.suptitle("Top: six 5x5 filters (red > 0, blue < 0). Bottom: conv2d(image, filter), one "
                "feature map per filter —\nSobel x fires on vertical edges, Sobel y on horizontal "
                "ones, the Laplacian on thin lines and corners.", fontsize=11, y=1.06)
save_figure(figure, "02_convolution_filters.png")

# %% 3. A filter is learned, not designed
# A CNN does not get its filters from a textbook: they start random and gradient
# descent shapes them. Here one 3x3 convolution learns to reproduce the Sobel-x
# edge map from the image (mean squared error, Adam).
target = F.conv2d(x, centred(sobel_x, 3)[:, :, None, None], padding=1).data  # (1, H, W, 1)
layer = nn.Conv2d(1, 1, 3, padding=1, bias=False)
optimizer = nn.optim.Adam(layer.parameters(), lr=0.05)
for step in range(FILTER_STEPS):
    optimizer.zero_grad()
    loss = F.mse_loss(layer(x), target)
    loss.backward()
    optimizer.step()
    if step % max(1, FILTER_STEPS // 4) == 0 or step == FILTER_STEPS - 1:
        print(f"filter step {step:4d}  mse {loss.item():.2e}")
print("learned 3x3 filter:\n", np.round(layer.weight.data[:, :, 0, 0], 3))
print("Sobel x:\n", np.round(centred(sobel_x, 3), 3))

# %% 4. Stride: smaller feature maps
# With stride s the window jumps s pixels: Ho = floor((H + 2p - k) / s) + 1.
# Detectors stack stride-2 layers until a cell of the last map covers 16-32 px.
for k, s, p in [(3, 1, 1), (3, 2, 1), (7, 2, 3), (1, 1, 0)]:
    out = F.conv2d(x, np.ones((k, k, 1, 1), np.float32), stride=s, padding=p)
    print(f"k={k} s={s} p={p}: {x.shape[1:3]} -> {out.shape[1:3]}")

# %% 5. Transposed convolution: learnable upsampling
# FCN and U-Net must return to the input resolution. A transposed convolution
# with stride 2 spreads each input pixel over the output: pixel (i, j) adds
# value · W into the output window starting at (2i - p, 2j - p). It is exactly
# the gradient (the adjoint) of a stride-2 convolution — check it numerically:
#   <conv2d(z, W), y>  ==  <z, conv_transpose2d(y, Wᵀ)>
z = rng.standard_normal((1, 8, 8, 2))
w = rng.standard_normal((4, 4, 2, 3))
y = rng.standard_normal((1, 4, 4, 3))
lhs = float(np.sum(F.conv2d(z, w, stride=2, padding=1).data * y))
rhs = float(np.sum(z * F.conv_transpose2d(y, w.transpose(0, 1, 3, 2), stride=2, padding=1).data))
print(f"\nadjoint check: <conv(z), y> = {lhs:.10f}, <z, conv_transpose(y)> = {rhs:.10f}")

# The test: shrink the image 2x (average of each 2x2 block), then upsample it back.
height, width = image.shape[:2]
low = image.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))[None]  # (1, H/2, W/2, 3)
eye = np.eye(3, dtype=np.float32)                                # channel c -> channel c


def psnr(estimate, reference, border=2):
    """Peak signal-to-noise ratio in dB (images in [0, 1]), ignoring a thin border."""
    inner = (slice(border, -border), slice(border, -border))
    error = np.mean((np.clip(estimate, 0, 1)[inner] - reference[inner]) ** 2)
    return 10 * np.log10(1.0 / error)


# Nearest neighbour: kernel 2, stride 2, a kernel of ones — each pixel paints a 2x2 block.
nearest_w = np.ones((2, 2, 1, 1), np.float32) * eye              # (2, 2, 3, 3)
nearest = F.conv_transpose2d(low, nearest_w, stride=2).data[0]
# Bilinear: kernel 4, stride 2, padding 1 with weights outer([1, 3, 3, 1] / 4) —
# the fixed initialization FCN gives its upsampling layers.
tent = np.array([1, 3, 3, 1], np.float32) / 4
bilinear_w = np.outer(tent, tent)[:, :, None, None] * eye        # (4, 4, 3, 3)
bilinear = F.conv_transpose2d(low, bilinear_w, stride=2, padding=1).data[0]
# Learned: the same geometry, started from the bilinear kernel (FCN's initialization)
# and trained to undo the shrinking: it can only get better than its start.
upsample = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1)
upsample.weight.data[...] = bilinear_w
upsample.bias.data[...] = 0
optimizer = nn.optim.Adam(upsample.parameters(), lr=0.01)
schedule = nn.optim.CosineAnnealingLR(optimizer, T_max=UPSAMPLE_STEPS)
for step in range(UPSAMPLE_STEPS):
    optimizer.zero_grad()
    loss = F.mse_loss(upsample(low), image[None])
    loss.backward()
    optimizer.step()
    schedule.step()
    if step % max(1, UPSAMPLE_STEPS // 4) == 0 or step == UPSAMPLE_STEPS - 1:
        print(f"upsampling step {step:4d}  mse {loss.item():.2e}")
with nn.no_grad():
    learned = upsample(low).data[0]
scores = {name: psnr(result, image) for name, result in
          [("nearest", nearest), ("bilinear kernel", bilinear), ("learned", learned)]}
print("PSNR against the original: " + ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items()))
print("(the learned kernel was fit on this very image: an in-sample figure)")

zoom = (slice(70, 200), slice(50, 260))                          # the car
figure, axes = plt.subplots(1, 5, figsize=(18, 3.4),
                            gridspec_kw={"width_ratios": [0.7, 1, 1, 1, 1]})
kernel = upsample.weight.data[:, :, 0, 0]                        # (4, 4): red in -> red out
axes[0].imshow(kernel, cmap="RdBu_r", vmin=-np.abs(kernel).max(), vmax=np.abs(kernel).max())
for (i, j), value in np.ndenumerate(kernel):
    axes[0].text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
axes[0].set_title("learned 4x4 kernel, red -> red\n(bilinear: outer([1,3,3,1]/4))", fontsize=9)
axes[0].set_xticks([])
axes[0].set_yticks([])
panels = [(f"nearest (k2 s2), {scores['nearest']:.1f} dB", nearest),
          (f"bilinear kernel (k4 s2 p1), {scores['bilinear kernel']:.1f} dB", bilinear),
          (f"learned kernel (k4 s2 p1), {scores['learned']:.1f} dB", learned),
          ("original", image)]
for ax, (title, picture) in zip(axes[1:], panels):
    ax.imshow(np.clip(picture[zoom], 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
figure.suptitle("Transposed convolution as upsampling of a 2x smaller image: fixed kernels vs a "
                "learned one", y=1.04)
save_figure(figure, "02_convolution_upsampling.png")

# %% 6. RoIPool vs RoIAlign: what rounding to the grid costs
# A detector's backbone gives one feature map at stride 8..32; for each proposed
# box (x1, y1, x2, y2, in image pixels) the head needs a fixed oh×ow feature.
# Our "feature map" is the image averaged over 8x8 blocks: one cell per 8x8 patch.
feature = image.reshape(height // ROI_STRIDE, ROI_STRIDE, width // ROI_STRIDE,
                        ROI_STRIDE, 3).mean(axis=(1, 3))[None]   # (1, H/8, W/8, 3)
scale = 1.0 / ROI_STRIDE


def c_round(v):
    """round() as C and torchvision do it: halves away from zero."""
    return float(np.sign(v) * np.floor(np.abs(v) + 0.5))


def roi_pool_cells(box, bins):
    """RoIPool's integer bins (in feature cells), as ``roi_pool`` computes them.

    The box is rounded to whole cells (``round(x·scale)``), its size counts both end
    cells (``end - start + 1``), and each bin is widened to whole cells
    (``floor`` of its start, ``ceil`` of its end): two roundings.
    """
    x1, y1, x2, y2 = (c_round(v * scale) for v in box)
    length_y, length_x = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
    cells = []
    for i in range(bins[0]):
        for j in range(bins[1]):
            top = y1 + np.floor(i * length_y / bins[0])
            bottom = y1 + np.ceil((i + 1) * length_y / bins[0])
            left = x1 + np.floor(j * length_x / bins[1])
            right = x1 + np.ceil((j + 1) * length_x / bins[1])
            cells.append((left, top, right, bottom))            # [start, end) in cells
    return cells


def roi_align_points(box, bins, sampling_ratio=2):
    """RoIAlign's continuous bins and bilinear sample points (aligned=True), in cells."""
    x1, y1, x2, y2 = (v * scale - 0.5 for v in box)             # pixel centres at .5
    bin_h, bin_w = (y2 - y1) / bins[0], (x2 - x1) / bins[1]
    offsets = (np.arange(sampling_ratio) + 0.5) / sampling_ratio
    ys = y1 + (np.arange(bins[0])[:, None] + offsets) * bin_h  # (oh, g)
    xs = x1 + (np.arange(bins[1])[:, None] + offsets) * bin_w  # (ow, g)
    return ys.ravel(), xs.ravel()


plate = np.array(PLATE_BOX, np.float64)
pool_cells = roi_pool_cells(plate, ROI_BINS)
covered = np.array(pool_cells)
snapped = np.array([covered[:, 0].min(), covered[:, 1].min(),
                    covered[:, 2].max(), covered[:, 3].max()]) * ROI_STRIDE
print(f"\nplate box {PLATE_BOX} px; RoIPool reads cells covering {snapped.astype(int).tolist()} px "
      f"(edges off by {np.abs(snapped - plate).astype(int).tolist()} px)")

# How much does a box's feature move when the box moves? Slide the plate box
# right by 0..2 cells and watch one output value of each operator.
shifts = np.linspace(0, 2 * ROI_STRIDE, 65)
moved = np.array([[0, *(plate + [s, 0, s, 0])] for s in shifts])  # (S, 5) [image, x1, y1, x2, y2]
pooled = F.roi_pool(feature, moved, ROI_BINS, scale).data      # (S, oh, ow, 3)
aligned = F.roi_align(feature, moved, ROI_BINS, scale, 2, aligned=True).data
distinct_pool = len(np.unique(pooled[:, 0, 0, 0]))
print(f"box slid over {len(shifts)} positions: RoIPool's bin (0, 0) takes {distinct_pool} "
      f"distinct values, RoIAlign's {len(np.unique(aligned[:, 0, 0, 0]))}")

# RoIAlign is differentiable in the box too: the gradient tells how the feature
# changes when an edge moves — what a box-refinement loss could follow.
box = nn.Tensor(np.array([[0, *plate]]), requires_grad=True)
F.roi_align(feature.astype(np.float64), box, ROI_BINS, scale, 2, aligned=True).sum().backward()
print(f"d(sum of RoIAlign features)/d(x1, y1, x2, y2) = {np.round(box.grad[0, 1:], 4)}")

# Crops: the plate's feature resampled to 4x12 by each operator, next to the truth
# (the image itself, averaged down to the same 4x12 grid over the exact box).
crop_size = (4, 12)
fine = image.reshape(height // 4, 4, width // 4, 4, 3).mean(axis=(1, 3))[None]  # stride 4
crops = {
    "RoIPool (max, rounded bins)": F.roi_pool(fine, [plate[None]], crop_size, 0.25).data[0],
    "RoIAlign (aligned=True)": F.roi_align(fine, [plate[None]], crop_size, 0.25, 2, True).data[0],
}
x1, y1, x2, y2 = PLATE_BOX
exact = np.asarray(Image.fromarray((image[y1:y2, x1:x2] * 255).astype(np.uint8)).resize(
    crop_size[::-1], Image.BOX), np.float32) / 255                # (4, 12, 3)
crops["image resized over the exact box"] = exact
for name, crop in crops.items():
    if crop is not exact:
        print(f"{name}: mean |crop - exact| = {np.abs(crop - exact).mean():.3f}")

figure = plt.figure(figsize=(17, 7.2))
grid = figure.add_gridspec(2, 3, height_ratios=[1.3, 0.55], hspace=0.4)
view = (slice(14, 26), slice(10, 30))                            # cells around the plate
extent = (view[1].start - 0.5, view[1].stop - 0.5, view[0].stop - 0.5, view[0].start - 0.5)
for col, title in enumerate(["RoIPool: box and bins rounded to cells",
                             "RoIAlign: exact bins, 2x2 bilinear samples each"]):
    ax = figure.add_subplot(grid[0, col])
    ax.imshow(feature[0][view], extent=extent, interpolation="nearest")
    for c in np.arange(view[1].start, view[1].stop + 1) - 0.5:   # the feature grid
        ax.axvline(c, color="white", lw=0.4, alpha=0.6)
    for r in np.arange(view[0].start, view[0].stop + 1) - 0.5:
        ax.axhline(r, color="white", lw=0.4, alpha=0.6)
    # the true box, in cell coordinates (cell c spans [c - 0.5, c + 0.5])
    bx1, by1, bx2, by2 = plate * scale - 0.5
    ax.add_patch(patches.Rectangle((bx1, by1), bx2 - bx1, by2 - by1, fill=False, ec="lime",
                                   lw=2.5, ls="--", label="true box"))
    if col == 0:
        colors = plt.cm.tab10(np.arange(len(pool_cells)))
        for (left, top, right, bottom), color in zip(pool_cells, colors):
            ax.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                           fill=True, fc=(*color[:3], 0.25), ec=color, lw=2))
        sx1, sy1, sx2, sy2 = snapped * scale - 0.5
        ax.add_patch(patches.Rectangle((sx1, sy1), sx2 - sx1, sy2 - sy1, fill=False, ec="white",
                                       lw=2.5, label="cells RoIPool reads"))
        ax.plot([], [], color="C0", lw=2, label="RoIPool bins (whole cells, overlapping)")
    else:
        ys, xs = roi_align_points(plate, ROI_BINS)
        for i in range(ROI_BINS[0] + 1):
            ax.plot([bx1, bx2], [by1 + i * (by2 - by1) / ROI_BINS[0]] * 2, color="orange", lw=1.5)
        for j in range(ROI_BINS[1] + 1):
            ax.plot([bx1 + j * (bx2 - bx1) / ROI_BINS[1]] * 2, [by1, by2], color="orange", lw=1.5)
        gx, gy = np.meshgrid(xs, ys)
        ax.scatter(gx, gy, s=22, color="red", zorder=3, label="sample points")
        ax.plot([], [], color="orange", lw=1.5, label="RoIAlign bins (exact)")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
ax = figure.add_subplot(grid[0, 2])
ax.plot(shifts, pooled[:, 0, 0, 0], drawstyle="steps-post", label="RoIPool")
ax.plot(shifts, aligned[:, 0, 0, 0], label="RoIAlign")
ax.set_xlabel("box shifted right by (pixels)")
ax.set_ylabel("output bin (0, 0), red channel")
ax.set_title("Moving the box: RoIPool jumps in steps,\n"
             f"RoIAlign follows smoothly (stride {ROI_STRIDE})")
ax.legend()
for col, (title, crop) in enumerate(crops.items()):
    ax = figure.add_subplot(grid[1, col])
    ax.imshow(np.clip(crop, 0, 1), interpolation="nearest")
    error = np.abs(crop - exact).mean()
    note = "" if crop is exact else f", mean |error| {error:.3f}"
    ax.set_title(f"plate, {crop_size[0]}x{crop_size[1]}: {title}{note}", fontsize=10)
    ax.axis("off")
save_figure(figure, "02_convolution_roi.png")
print(f"done in {time.perf_counter() - start_time:.1f} s")
