"""Two rendered street scenes with their cars (label 1) and plates (label 2): the data the
detectors' overfitting tests learn, and the loop they learn it with (``overfit``)."""
import numpy as np

from detection.training import MEAN, STD


def rendered_pair(seed, size=128, masks=False):
    """Two scenes of ``plates.synthetic.render_scene`` (one generator seeded by ``seed``).

    Returns:
        tuple: images ndarray[2, size, size, 3] float32, normalized with ``MEAN`` and
        ``STD``; targets, a list of 2 dicts: ``boxes`` (G, 4) float32 xyxy, ``labels``
        (G,) int64 and, with ``masks``, ``masks`` (G, size, size) bool.
    """
    from plates.synthetic import render_scene

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(2):
        image, objects, _, instance = render_scene(rng, size)
        keep = [i for i, o in enumerate(objects) if o["name"] in ("car", "plate")]
        target = {"boxes": np.array([objects[i]["bbox"] for i in keep], np.float32).reshape(-1, 4),
                  "labels": np.array([1 if objects[i]["name"] == "car" else 2 for i in keep],
                                     np.int64)}
        if masks:
            target["masks"] = np.stack([instance == i + 1 for i in keep]) if keep \
                else np.zeros((0, size, size), bool)
        images.append((image / np.float32(255) - np.float32(MEAN)) / np.float32(STD))
        targets.append(target)
    return np.stack(images).astype(np.float32), targets


def overfit(model, optimizer, steps, *batch):
    """``steps`` optimizer steps on ``model.loss(*batch)["loss"]``, always the same batch.

    Returns:
        tuple of float: the loss of the first step and that of the last.
    """
    first = None
    for _ in range(steps):
        losses = model.loss(*batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        first = first if first is not None else losses["loss"].item()
    return first, losses["loss"].item()
