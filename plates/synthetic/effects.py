"""Photometric effects of light and camera: lighting, cast shadows, blur, sensor noise,
JPEG artefacts.

They act on the composed image only: none moves a pixel, so the boxes and masks,
fixed by the geometry, stay exact (a blurred edge still has its mask where the
unblurred layer's coverage crossed 0.5). The order follows the physics: light falls on
the scene (illumination, shadows), the lens blurs it, the sensor adds noise, the
response curve maps it to pixel values, the encoder compresses it.

Images are float32 ``(H, W, 3)`` on the 0..255 scale until the final uint8.
"""
import io

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from plates.synthetic.textures import value_noise

__all__ = ["apply_lighting", "tone_curve", "cast_shadows", "apply_blur", "add_noise",
           "jpeg_roundtrip", "apply_camera_effects"]


def apply_lighting(rng, image):
    """Global brightness, a colour cast, a smooth gain field and vignetting.

    ``out = gain(x, y) * cast * image``, with ``gain`` a brightness (dusk to bright
    sun) times a low-frequency field (uneven daylight, street lights) times a vignette.
    """
    height, width = image.shape[:2]
    brightness = rng.uniform(0.6, 1.25) if rng.random() < 0.85 else rng.uniform(0.4, 0.6)
    cast = (1.0 + rng.normal(0.0, 0.05, 3)).astype(np.float32)
    field = 1.0 + rng.uniform(0.05, 0.3) * value_noise(rng, height, width, max(height, width) / 2)
    ys = ((np.arange(height, dtype=np.float32) - height / 2) / height)[:, None]
    xs = ((np.arange(width, dtype=np.float32) - width / 2) / width)[None, :]
    vignette = 1.0 - rng.uniform(0.0, 0.6) * (ys ** 2 + xs ** 2)
    gain = (brightness * field * vignette)[:, :, None] * cast     # (H, W, 3)
    return image * gain


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


def cast_shadows(rng, image, count):
    """Darken soft random polygons: shadows of trees, poles and buildings.

    They fall on vehicles and plates as on the road, so the detector must cope with a
    plate half in shadow.
    """
    height, width = image.shape[:2]
    if count == 0:
        return image
    scale = 4  # drawn at quarter resolution, then blurred and upsampled: soft edges
    mask = Image.new("L", (max(width // scale, 1), max(height // scale, 1)), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(count):
        cx, cy = rng.uniform(0, mask.width), rng.uniform(0, mask.height)
        radius = rng.uniform(0.1, 0.5) * mask.width
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
        radii = radius * rng.uniform(0.4, 1.0, angles.size)
        points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)]
        draw.polygon(points, fill=255)
    soft = np.asarray(mask.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    soft = ndimage.gaussian_filter(soft, sigma=rng.uniform(1.0, 4.0))
    darkness = rng.uniform(0.15, 0.4)
    return image * (1.0 - darkness * soft)[:, :, None]


def apply_blur(rng, image):
    """Defocus (Gaussian, sigma up to 1.3 px) or, sometimes, horizontal motion blur."""
    choice = rng.random()
    if choice < 0.45:
        return image
    if choice < 0.85:
        sigma = rng.uniform(0.3, 1.3)
        return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    length = int(rng.integers(2, 6))
    return ndimage.uniform_filter1d(image, size=length, axis=1)


def add_noise(rng, image):
    """Sensor noise: Gaussian, stronger in dark images, partly shared by the channels."""
    sigma = rng.uniform(0.0, 9.0)
    luma_noise = _unit_noise(rng, image.shape[:2])[:, :, None]
    chroma_noise = _unit_noise(rng, image.shape)
    return image + sigma * (0.7 * luma_noise + 0.4 * chroma_noise)


def _unit_noise(rng, shape):
    """Zero-mean, unit-variance noise with a triangular distribution (sum of two uniform
    bytes): close enough to Gaussian for sensor noise, and ~10x cheaper to draw."""
    a = rng.integers(0, 256, size=shape, dtype=np.uint8).astype(np.float32)
    b = rng.integers(0, 256, size=shape, dtype=np.uint8).astype(np.float32)
    # Var of one uniform byte is (256**2 - 1) / 12; the sum has twice that.
    return (a + b - 255.0) / np.float32(np.sqrt(2 * (256 ** 2 - 1) / 12))


def jpeg_roundtrip(image_uint8, quality):
    """Encode and decode with JPEG at ``quality`` (blocking and ringing artefacts)."""
    buffer = io.BytesIO()
    Image.fromarray(image_uint8).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def apply_camera_effects(rng, image):
    """Lighting, shadows, blur, noise, tone curve and (half of the time) JPEG, in that order.

    Args:
        rng (np.random.Generator): randomness.
        image (ndarray[H, W, 3]): float32 composed scene, 0..255 scale.

    Returns:
        ndarray[H, W, 3]: uint8 photograph.
    """
    image = apply_lighting(rng, image)
    image = cast_shadows(rng, image, int(rng.choice([0, 0, 1, 2])))
    image = apply_blur(rng, image)
    image = add_noise(rng, image)
    result = tone_curve(rng)[np.clip(np.rint(image), 0, 255).astype(np.uint8)]
    if rng.random() < 0.5:
        result = jpeg_roundtrip(result, rng.integers(25, 80))
    return result
