"""inq-onnx: Incremental Network Quantization for ONNX models, deployed as bit-packed com.inq ops."""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ConfigError, DataError, InqError, ModelError, RuntimeUnavailableError, TrainingError, ValidationError)
from .runtime import get_library_path  # noqa: E402
from .api import convert, export, info, quantize, validate  # noqa: E402
from .pipeline import QuantizeConfig  # noqa: E402
from .retrain import RetrainConfig  # noqa: E402
from .schemas import register_schemas  # noqa: E402

# onnx.checker and shape inference accept com.inq nodes once inq_onnx is imported.
register_schemas()

__all__ = ["__version__", "get_library_path", "quantize", "validate", "info", "export", "convert", "QuantizeConfig",
           "RetrainConfig", "InqError", "ModelError", "DataError", "ConfigError", "RuntimeUnavailableError",
           "TrainingError", "ValidationError"]


def __getattr__(name):
    # InferenceSession subclasses onnxruntime's: imported on first use (and left out of __all__, so that a star
    # import does not need onnxruntime either).
    if name == "InferenceSession":
        from .session import InferenceSession

        globals()[name] = InferenceSession
        return InferenceSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
