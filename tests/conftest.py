"""Test set-up: the tests' own modules on sys.path; train and runtime markers, each venv skipping the other's."""

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def has_training() -> bool:
    """onnxruntime-training is installed (it provides onnxruntime/training/api)."""
    spec = importlib.util.find_spec("onnxruntime")
    return spec is not None and spec.submodule_search_locations is not None and any(
        (Path(p) / "training" / "api").is_dir() for p in spec.submodule_search_locations)


def pytest_collection_modifyitems(config, items):
    """`train` tests need onnxruntime-training, `runtime` tests stock onnxruntime alone: the two cannot share an
    environment, so each venv skips the other's (tests/run.sh runs both)."""
    training = has_training()
    wrong = "runtime" if training else "train"
    reason = ("needs stock onnxruntime only (this venv has onnxruntime-training)" if training
              else "needs onnxruntime-training (this venv has stock onnxruntime)")
    for item in items:
        if wrong in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
