"""qdq-onnx: TensorRT-oriented Q/DQ placement and quantization-aware training on ONNX."""

from qdq_onnx.compat import utils  # noqa: E402
from qdq_onnx.compat.api import QuantizedModel, calibrate, quantize_model  # noqa: E402
from qdq_onnx.errors import QdqError  # noqa: E402
from qdq_onnx.placement.cases import CustomQDQInsertionCase  # noqa: E402
from qdq_onnx.placement.plan import PlacementPlan  # noqa: E402
from qdq_onnx.placement.spec import QuantizationSpec  # noqa: E402
from qdq_onnx.version import __version__  # noqa: E402

__all__ = ["CustomQDQInsertionCase", "calibrate", "PlacementPlan", "QdqError", "QuantizationSpec",
           "QuantizedModel", "quantize_model", "utils", "__version__"]
