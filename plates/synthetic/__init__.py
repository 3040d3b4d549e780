"""Synthetic license-plate street scenes with exact boxes and masks.

detseg renders its own data because the lab asks for plate detection and digit
segmentation without any pretrained model or downloadable dataset. Each image is a
street scene (road, walls, foliage, signs) with 0..3 cars and motorbikes carrying
one-row or two-row plates, rendered with exact ground truth: every glyph is drawn into
its own mask, every warp is applied to image and masks alike, and boxes are the tight
boxes of the final masks.

Plates come as the world has them (``PlateMix``, each feature with its probability):
light characters on dark plates, national strips, stickers, screws, decorative
separators, frames with dealer text, uneven light and dirt. None of the decorations is
a character: on the plate they are the plate's pixels, on the frame the vehicle's.

Python API::

    from plates.synthetic import render_scene, generate_plate_dataset, PlateMix
    image, objects, class_mask, instance_mask = render_scene(np.random.default_rng(0), 256)
    generate_plate_dataset("data/plates", num_images=1000, seed=0, workers=2)
    render_scene(0, 256, plate_mix=PlateMix.only("sticker"))    # a sticker on every plate

Command line::

    python -m plates.synthetic plates --out DIR --num-images N --seed S \\
        [--image-size 256] [--workers K] [--plate-mix strip=0.5 dirt=0 ...] [--quiet]
    python -m plates.synthetic gallery --out docs/figures/plate_styles.png

Files, one concept each: ``fonts`` (glyphs), ``plates`` (formats, colours, rendering,
warping), ``decorations`` (what a plate carries besides characters), ``geometry``
(homographies), ``vehicles``, ``backgrounds`` (road and camera), ``distractors``,
``textures`` (noise), ``effects`` (light and camera), ``scene`` (composition and ground
truth), ``generate`` (the dataset on disk), ``gallery`` (the figure of plate styles).
"""
from plates.synthetic.scene import render_scene, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE
from plates.synthetic.generate import (MAX_IMAGES, OutputDirectoryError, generate_plate_dataset,
                                       image_rng, split_ids)
from plates.synthetic.plates import PLATE_FEATURES, PlateMix

__all__ = ["render_scene", "generate_plate_dataset", "image_rng", "split_ids", "PlateMix",
           "PLATE_FEATURES", "OutputDirectoryError", "MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE",
           "MAX_IMAGES"]
