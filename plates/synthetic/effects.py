"""Photometric effects of light and camera: lighting, cast shadows, blur, sensor noise,
tone curve, JPEG artefacts.

They act on the composed image only: none moves a pixel, so the boxes and masks,
fixed by the geometry, stay exact (a blurred edge still has its mask where the
unblurred layer's coverage crossed 0.5). The order follows the physics, with one
exchange: the lens blur is applied before the light instead of after it. The light
(a gain per pixel) varies over several pixels (the softened edges of cast shadows) to
tens of pixels, the blur over one or two, so ``blur(gain * image)`` and
``gain * blur(image)`` differ by a grey level or so at most, at shadow edges.

    blur -> light field (daylight x vignette x cast shadows) -> + sensor noise
         -> exposure and white balance -> tone curve -> JPEG (half of the time)

The light field is smooth, so it is computed at a quarter of the resolution and
interpolated up. Everything per pixel is an 8-bit Pillow operation on the whole image
(multiply, add with clipping, lookup table): no float image exists. The sensor noise of
an image is a window, at a random place, of one fixed image of noise (made once per
process), scaled by a lookup table: drawing millions of random numbers per image would
cost more than all the rest of the light.
"""
import functools
import io

import numpy as np
from PIL import Image, ImageChops, ImageDraw
from scipy import ndimage
from scipy.special import ndtri

from plates.synthetic.textures import value_noise

__all__ = ["LIGHT_SCALE", "NOISE_POOL", "lighting_gain", "tone_curve", "apply_blur",
           "noise_pool", "sensor_noise", "jpeg_roundtrip", "apply_camera_effects"]

# The gain field is computed at 1 / LIGHT_SCALE of the resolution.
LIGHT_SCALE = 4
# Sensor noise is cut from one fixed image of unit noise (``noise_pool``): side in pixels,
# grey-level steps per unit, seed.
NOISE_POOL, NOISE_STEPS, NOISE_SEED = 1536, 20, 2024
# Unit-variance noise from one byte: the normal quantiles of 256 equal-probability bins.
_NORMAL_BYTES = ndtri((np.arange(256) + 0.5) / 256)
_NORMAL_BYTES /= _NORMAL_BYTES.std()


def _cast_shadows(rng, height, width, count):
    """Soft random polygons (shadows of trees, poles, buildings): ``(h, w)`` float32 in
    [0, 1], drawn at the (low) resolution given and blurred there."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(count):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.1, 0.5) * width
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
        radii = radius * rng.uniform(0.4, 1.0, angles.size)
        draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)],
                     fill=255)
    soft = np.asarray(mask, dtype=np.float32) / 255.0
    # Edges 1..4 full-resolution pixels soft (the upsampling adds about one more).
    return ndimage.gaussian_filter(soft, sigma=rng.uniform(1.0, 4.0) / LIGHT_SCALE)


def lighting_gain(rng, height, width):
    """The light falling on the scene: a global exposure, a gain field and a colour cast.

    ``light(x, y) = brightness (dusk to bright sun) x field(x, y)``, the field a
    low-frequency noise (uneven daylight, street lights) x a vignette x (1 - darkness x
    cast shadows); the shadows fall on vehicles and plates as on the road, so the
    detector must cope with a plate half in shadow. The field is smooth: computed at
    1 / ``LIGHT_SCALE`` of the resolution and interpolated up, as 8 bits relative to its
    maximum (steps of 0.4%): ``field = peak * gain / 255``.

    Returns:
        tuple: ``(gain, exposure, cast)``: ``gain`` an L ``PIL.Image`` (H x W),
        ``exposure = brightness * peak`` (float), ``cast`` ndarray[3] float32.
    """
    low_h, low_w = -(-height // LIGHT_SCALE), -(-width // LIGHT_SCALE)
    brightness = rng.uniform(0.6, 1.25) if rng.random() < 0.85 else rng.uniform(0.4, 0.6)
    cast = (1.0 + rng.normal(0.0, 0.05, 3)).astype(np.float32)
    field = 1.0 + rng.uniform(0.05, 0.3) * value_noise(rng, low_h, low_w, max(low_h, low_w) / 2)
    # Pixel centres of the low-resolution grid, in full-resolution units.
    ys = (((np.arange(low_h, dtype=np.float32) + 0.5) * LIGHT_SCALE - height / 2) / height)[:, None]
    xs = (((np.arange(low_w, dtype=np.float32) + 0.5) * LIGHT_SCALE - width / 2) / width)[None, :]
    field = field * (1.0 - rng.uniform(0.0, 0.6) * (ys ** 2 + xs ** 2))          # vignette
    count = int(rng.choice([0, 0, 1, 2]))
    if count:
        field *= 1.0 - rng.uniform(0.15, 0.4) * _cast_shadows(rng, low_h, low_w, count)
    peak = float(field.max())
    gain = Image.fromarray(np.rint(field * (255.0 / peak)).astype(np.uint8))
    return gain.resize((width, height), Image.BILINEAR), brightness * peak, cast


def tone_curve(rng):
    """The camera's response: a gamma and a contrast around mid-grey, as a lookup table.

    Applied to the quantized image, after the sensor noise, as a camera does:
    ``out = 255 * clip((((v / 255) ** gamma) - 0.5) * contrast + 0.5, 0, 1)``.

    Returns:
        ndarray[256]: uint8 table.
    """
    gamma = rng.uniform(0.8, 1.25)
    contrast = rng.uniform(0.8, 1.15)
    levels = np.arange(256) / 255.0
    curve = np.clip((levels ** gamma - 0.5) * contrast + 0.5, 0, 1)
    return np.rint(curve * 255).astype(np.uint8)


def _fixed_point(weights):
    """Filter weights as integers summing to 256 (8 fractional bits); the rounding
    remainder goes to the largest weight."""
    weights = np.asarray(weights, dtype=np.float64)
    q = np.rint(weights / weights.sum() * 256).astype(np.int64)
    q[int(np.argmax(weights))] += 256 - q.sum()
    return q


def _convolve(image, offsets, weights, axis):
    """One pass of a 1-D filter along ``axis`` of a uint8 image, in 16-bit fixed point.

    ``out[i] = round(sum_k w_k * in[i + offset_k] / 256)``, the border pixel repeated
    beyond the edge. With integer weights summing to 256 the sum never exceeds
    255 * 256 < 2**16, so it is exact in uint16: one multiply and one add per tap.

    Args:
        image (ndarray[H, W, C]): uint8.
        offsets (sequence[int]): tap offsets along ``axis``.
        weights (ndarray[K]): integer weights summing to 256 (``_fixed_point``).
        axis (int): 0 (rows) or 1 (columns).
    """
    before, after = max(-min(offsets), 0), max(max(offsets), 0)
    pad = [(0, 0)] * image.ndim
    pad[axis] = (before, after)
    padded = np.pad(image, pad, mode="edge")
    length = image.shape[axis]
    total = np.full(image.shape, 128, dtype=np.uint16)       # 128: round, not truncate
    for offset, weight in zip(offsets, weights):
        window = [slice(None)] * image.ndim
        window[axis] = slice(before + offset, before + offset + length)
        total += np.uint16(weight) * padded[tuple(window)]
    total >>= 8
    return total.astype(np.uint8)


def apply_blur(rng, image):
    """Defocus (Gaussian, sigma up to 1.3 px) or, sometimes, horizontal motion blur.

    Separable 8-bit filters in fixed point (``_convolve``): the Gaussian truncated at
    ``ceil(2.5 sigma)`` pixels, the motion blur a box of 2..5 pixels.

    Args:
        rng (np.random.Generator): randomness.
        image (ndarray[H, W, 3]): uint8.

    Returns:
        ndarray[H, W, 3]: uint8 (the input itself when there is no blur).
    """
    choice = rng.random()
    if choice < 0.45:
        return image
    if choice < 0.85:
        sigma = rng.uniform(0.3, 1.3)
        radius = int(np.ceil(2.5 * sigma))
        offsets = np.arange(-radius, radius + 1)
        weights = _fixed_point(np.exp(-0.5 * (offsets / sigma) ** 2))
        return _convolve(_convolve(image, offsets, weights, 0), offsets, weights, 1)
    length = int(rng.integers(2, 6))
    offsets = np.arange(length) - length // 2
    return _convolve(image, offsets, _fixed_point(np.ones(length)), 1)


@functools.lru_cache(maxsize=1)
def noise_pool():
    """A fixed image of unit sensor noise, ``NOISE_POOL`` pixels square, from a fixed seed.

    Each channel's noise is ``0.7 * luma + 0.4 * chroma_c``: ``luma`` shared by the three
    channels of a pixel, ``chroma_c`` its own, both standard normal (the quantile of a
    random byte's 1/256 probability bin: one byte per value). Stored as
    ``round(NOISE_STEPS * noise) + 128`` in an RGB image. Made once per process (a
    fraction of a second); the same in every process, so the output never depends on
    which worker renders an image.
    """
    rng = np.random.default_rng(NOISE_SEED)
    luma = _NORMAL_BYTES[rng.integers(0, 256, size=(NOISE_POOL, NOISE_POOL, 1))]
    chroma = _NORMAL_BYTES[rng.integers(0, 256, size=(NOISE_POOL, NOISE_POOL, 3))]
    values = np.rint(NOISE_STEPS * (0.7 * luma + 0.4 * chroma)) + 128
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


def sensor_noise(rng, width, height):
    """The sensor noise of one image: a window of ``noise_pool()`` at a random place,
    scaled to a random strength (sigma 0..9 grey levels, Gaussian).

    Returns:
        PIL.Image.Image: RGB, ``noise + 128`` (``ImageChops.add(..., offset=-128)``
        removes the offset).
    """
    sigma = rng.uniform(0.0, 9.0)
    pool = noise_pool()
    # Larger images than the pool (rare) tile it.
    reps_x, reps_y = -(-width // NOISE_POOL), -(-height // NOISE_POOL)
    if reps_x > 1 or reps_y > 1:
        tiled = Image.new("RGB", (reps_x * NOISE_POOL, reps_y * NOISE_POOL))
        for ty in range(reps_y):
            for tx in range(reps_x):
                tiled.paste(pool, (tx * NOISE_POOL, ty * NOISE_POOL))
        pool = tiled
    left = int(rng.integers(0, pool.width - width + 1))
    top = int(rng.integers(0, pool.height - height + 1))
    table = np.clip(np.rint((np.arange(256) - 128) * (sigma / NOISE_STEPS)) + 128, 0, 255)
    return pool.crop((left, top, left + width, top + height)).point(table.astype(int).tolist() * 3)


def jpeg_roundtrip(image, quality):
    """Encode and decode with JPEG at ``quality`` (blocking and ringing artefacts).

    Args:
        image (PIL.Image.Image | ndarray[H, W, 3]): RGB, uint8.
        quality (int): 1..100.

    Returns:
        ndarray[H, W, 3]: uint8.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.array(Image.open(buffer).convert("RGB"))


def apply_camera_effects(rng, image):
    """Blur, light, noise, white balance, tone curve and (half of the time) JPEG, in that
    order, as 8-bit Pillow operations over the whole image:

        lit   = blurred * gain / 255                      (ImageChops.multiply, rounded)
        noisy = clip(lit + sensor noise)                   (ImageChops.add, offset 128)
        out   = table_c[noisy]: tone(clip(v * exposure * cast_c))     (one lookup table)

    The exposure (brightness times the gain field's peak) is applied with the white
    balance after the noise, as a camera's gain and white balance follow its sensor.

    Args:
        rng (np.random.Generator): randomness.
        image (PIL.Image.Image): the composed RGB scene.

    Returns:
        ndarray[H, W, 3]: uint8 photograph.
    """
    width, height = image.size
    gain, exposure, cast = lighting_gain(rng, height, width)
    pixels = np.asarray(image)
    blurred = apply_blur(rng, pixels)
    if blurred is not pixels:
        image = Image.fromarray(blurred)
    lit = ImageChops.multiply(image, Image.merge("RGB", (gain, gain, gain)))
    noise = sensor_noise(rng, width, height)
    tone = tone_curve(rng)
    levels = np.arange(256) * exposure
    table = np.concatenate([tone[np.clip(np.rint(levels * c), 0, 255).astype(np.intp)]
                            for c in cast])
    photo = ImageChops.add(lit, noise, 1.0, -128).point(table.tolist())
    if rng.random() < 0.5:
        return jpeg_roundtrip(photo, rng.integers(25, 80))
    return np.array(photo)
