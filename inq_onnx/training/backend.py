"""The interface between INQ's retraining loop and the runtime that computes gradients."""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

__all__ = ["GradientBackend"]


class GradientBackend(Protocol):
    """Computes loss and gradients of a model's trainable parameters for one batch.

    The retraining loop owns the parameter values and the optimizer (numpy): it reads gradients here, updates
    the parameters itself, keeping frozen weights exactly at their power-of-two values, and writes them back.
    """

    parameter_names: list[str]

    def get_parameters(self) -> dict[str, np.ndarray]:
        """Current values of the trainable parameters (copies)."""

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite trainable parameters (any subset)."""

    def loss_and_gradients(self, inputs: Mapping[str, np.ndarray], target: np.ndarray | list[np.ndarray]
                           ) -> tuple[float, dict[str, np.ndarray]]:
        """Forward and backward pass for one batch: the mean loss and the gradient of every trainable parameter.

        `target` is int64 labels (cross-entropy) or the teacher's outputs, one array per model output
        (distillation).
        """
