"""Imports onnxruntime-training's on-device API (`api`, `artifacts`, `onnxblock`) without importing torch.

`import onnxruntime.training` runs the package's `__init__`, which imports `optim`, which imports torch. The
on-device API itself needs neither, so we register a bare module object for `onnxruntime.training` (with the
package's real `__path__`) before importing its submodules. If the real package was already imported (torch
present and someone imported it), that one is used as is.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from dataclasses import dataclass
from typing import Any

from inq_onnx.errors import RuntimeUnavailableError

__all__ = ["OrtTraining", "load_ort_training", "MAX_IR_VERSION", "MAX_ONNX_OPSET"]

_INSTALL_HINT = "pip install 'inq-onnx[train]'"

# What onnxruntime-training 1.19 can load: IR version 10, ai.onnx opset 21.
MAX_IR_VERSION = 10
MAX_ONNX_OPSET = 21


@dataclass(frozen=True)
class OrtTraining:
    """The modules of onnxruntime-training the backend uses."""

    ort: Any  # the `onnxruntime` package (InferenceSession, version)
    api: Any  # onnxruntime.training.api: Module, CheckpointState
    artifacts: Any  # onnxruntime.training.artifacts: generate_artifacts
    onnxblock: Any  # onnxruntime.training.onnxblock: Block, blocks, loss


_cached: OrtTraining | None = None


def load_ort_training() -> OrtTraining:
    """The on-device training modules, imported without torch; RuntimeUnavailableError when not installed."""
    global _cached
    if _cached is not None:
        return _cached
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeUnavailableError(f"onnxruntime-training is not installed: {_INSTALL_HINT}") from exc

    from onnxruntime.capi import _pybind_state as capi

    training_dir = os.path.join(os.path.dirname(ort.__file__), "training")
    if not hasattr(capi, "GradientGraphBuilder") or not os.path.isdir(os.path.join(training_dir, "api")):
        raise RuntimeUnavailableError(
            f"the installed onnxruntime {ort.__version__} is the inference-only package, without training support: "
            f"pip uninstall onnxruntime && {_INSTALL_HINT} (the two packages provide the same `onnxruntime` module)"
        )

    if "onnxruntime.training" not in sys.modules:
        package = types.ModuleType("onnxruntime.training")
        package.__path__ = [training_dir]
        package.__package__ = "onnxruntime.training"
        package.__file__ = os.path.join(training_dir, "__init__.py")
        sys.modules["onnxruntime.training"] = package
        ort.training = package
    try:
        api = importlib.import_module("onnxruntime.training.api")
        artifacts = importlib.import_module("onnxruntime.training.artifacts")
        onnxblock = importlib.import_module("onnxruntime.training.onnxblock")
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"cannot import the training API of onnxruntime {ort.__version__} ({exc}): {_INSTALL_HINT}"
        ) from exc
    _cached = OrtTraining(ort=ort, api=api, artifacts=artifacts, onnxblock=onnxblock)
    return _cached
