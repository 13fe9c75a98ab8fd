"""qdq-onnx: TensorRT-oriented Q/DQ placement and quantization-aware training on ONNX."""

__version__ = "0.1.0"

from . import utils  # noqa: E402
from .api import QuantizedModel, calibrate, quantize_model  # noqa: E402
from .cases import CustomQDQInsertionCase  # noqa: E402
from .errors import QdqError  # noqa: E402
from .plan import PlacementPlan  # noqa: E402
from .spec import QuantizationSpec  # noqa: E402

__all__ = ["CustomQDQInsertionCase", "calibrate", "PlacementPlan", "QdqError", "QuantizationSpec",
           "QuantizedModel", "quantize_model", "utils", "__version__"]
