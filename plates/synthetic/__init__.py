"""Synthetic license-plate street scenes with exact boxes and masks.

detseg renders its own data because the lab asks for plate detection and digit
segmentation without any pretrained model or downloadable dataset. Each image is a
street scene (road, walls, foliage, signs) with 0..3 cars and motorbikes carrying
one-row or two-row plates, rendered with exact ground truth: every glyph is drawn into
its own mask, every warp is applied to image and masks alike, and boxes are the tight
boxes of the final masks.

Python API::

    from plates.synthetic import render_scene, generate_plate_dataset
    image, objects, class_mask, instance_mask = render_scene(np.random.default_rng(0), 256)
    generate_plate_dataset("data/plates", num_images=1000, seed=0, workers=2)

Command line::

    python -m plates.synthetic plates --out DIR --num-images N --seed S \\
        [--image-size 256] [--workers K] [--quiet]

Files, one concept each: ``fonts`` (glyphs), ``plates`` (formats, rendering, warping),
``geometry`` (homographies), ``vehicles``, ``backgrounds`` (road and camera),
``distractors``, ``textures`` (noise), ``effects`` (light and camera), ``scene``
(composition and ground truth), ``generate`` (the dataset on disk).
"""
from plates.synthetic.scene import render_scene, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE
from plates.synthetic.generate import generate_plate_dataset, image_rng, split_ids

__all__ = ["render_scene", "generate_plate_dataset", "image_rng", "split_ids",
           "MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE"]
