"""Exceptions raised by inq-onnx; the CLI turns each into one `Error: ...` line and an exit code."""

__all__ = ["InqError", "ModelError", "DataError", "ConfigError", "RuntimeUnavailableError", "TrainingError",
           "ValidationError"]


class InqError(Exception):
    """Base of every error inq-onnx raises on bad input or an unusable environment."""

    exit_code = 1


class ModelError(InqError):
    """The model file is missing, unreadable, or not something inq-onnx can work on."""


class DataError(InqError):
    """The data file does not match the model."""


class ConfigError(InqError):
    """An option is out of range or contradicts another."""

    exit_code = 2


class RuntimeUnavailableError(InqError):
    """A package a feature needs (onnxruntime, onnxruntime-training, matplotlib for reports) or the op library is
    missing."""


class TrainingError(InqError):
    """Retraining failed (for example it diverged)."""


class ValidationError(InqError):
    """The rewritten model does not reproduce the original closely enough."""
