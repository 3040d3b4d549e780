"""pycocotools as the oracle of ``detection.metrics``: its COCOeval on our inputs, the
comparison of its numbers with ours, and the matching against the loop reference."""
import contextlib
import io

import numpy as np

from detection.metrics.matching import (group_detections, match_detections,
                                        match_detections_reference)
from tests.oracles import require

STAT_KEYS = [
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
]


def run_cocoeval(images, categories, annotations, results, iou_type, iou_thresholds=None,
                 max_dets=(1, 10, 100)):
    """pycocotools' COCOeval of ``results`` against ``annotations`` (COCO dicts), after
    evaluate + accumulate + summarize (its printing silenced).

    Args:
        iou_type (str): ``"bbox"`` or ``"segm"``.
        iou_thresholds (sequence of float, optional): COCO's ten when None.
    """
    coco_module = require("pycocotools.coco")
    cocoeval_module = require("pycocotools.cocoeval")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_module.COCO()
        gt.dataset = {"images": images, "categories": categories, "annotations": annotations}
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            dt = coco_module.COCO()
            dt.dataset = {"images": images, "categories": categories, "annotations": []}
            dt.createIndex()
        evaluator = cocoeval_module.COCOeval(gt, dt, iou_type)
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.atleast_1d(np.asarray(iou_thresholds, np.float64))
        evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def assert_same_as_oracle(ours, evaluation, oracle, max_detections, atol):
    """Our ``mean_average_precision`` dict and ``coco_evaluate`` result equal the oracle's
    summary and its precision, recall and score arrays (within ``atol``)."""
    stats = np.array([ours[k] for k in STAT_KEYS])
    # pycocotools' summarize hard-codes maxDets=100 for stats[0]: -1 for other values.
    compared = slice(None) if max_detections == 100 else slice(1, None)
    np.testing.assert_allclose(stats[compared], oracle.stats[compared], rtol=0, atol=atol)
    np.testing.assert_allclose(evaluation.precision, oracle.eval["precision"], rtol=0, atol=atol)
    np.testing.assert_allclose(evaluation.recall, oracle.eval["recall"], rtol=0, atol=atol)
    np.testing.assert_allclose(evaluation.scores, oracle.eval["scores"], rtol=0, atol=atol)


def assert_matching_equals_reference(data, thresholds, ignore, max_detections):
    """The vectorized matching of ``data`` (``flatten_detections``) equals the loop
    reference, detection by detection."""
    groups = group_detections(data, max_detections)
    match = match_detections(groups, thresholds, ignore, data.gt_crowd)
    reference = match_detections_reference(data, thresholds, ignore, max_detections)
    assert sorted(reference) == sorted(groups.det_index.tolist())
    for j, d in enumerate(groups.det_index.tolist()):
        assert np.array_equal(match[:, :, j], reference[d])
