"""Import an oracle library for a test, or skip (fail under DETSEG_REQUIRE_ORACLES=1); oracle
models built for the tests and the benchmarks (``onnx_nms_session``)."""
import importlib
import os

import pytest


def require(module_name):
    """Return the imported module ``module_name`` (e.g. "torch", "onnxruntime").

    Skips the calling test when it is not installed, unless
    ``DETSEG_REQUIRE_ORACLES=1``, where the test fails instead.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"oracle {module_name!r} is not installed ({exc}); pip install -e '.[oracle]'"
        if os.environ.get("DETSEG_REQUIRE_ORACLES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    if module_name == "torch":
        module.set_num_threads(1)
    return module


def onnx_nms_session(threads=1):
    """An onnxruntime session of ONNX's NonMaxSuppression (opset 11, ``center_point_box=0``):
    inputs ``boxes`` (1, N, 4) yxyx, ``scores`` (1, 1, N), ``max_output`` (1,) int64,
    ``iou_threshold`` (1,); output ``selected`` (S, 3) int64. Needs onnx and onnxruntime
    (ImportError otherwise: a test calls ``require`` first)."""
    import onnx
    import onnxruntime

    helper, TensorProto = onnx.helper, onnx.TensorProto
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_output", "iou_threshold"],
                            ["selected"], center_point_box=0)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, None]),
         helper.make_tensor_value_info("max_output", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou_threshold", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])
