"""Numpy optimizers whose updates skip frozen weights entirely (learning rate, momentum and decay alike)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import ConfigError

__all__ = ["MaskedSGD", "MaskedAdamW", "make_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "adamw")


class MaskedSGD:
    """SGD with momentum and L2 weight decay, as INQ's reference training uses."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._velocity: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray],
             trainable: Mapping[str, np.ndarray]) -> None:
        """Update `params` in place; `trainable[name]` (bool, like the parameter) masks which entries move."""
        for name, grad in grads.items():
            w = params[name]
            g = grad + self.weight_decay * w if self.weight_decay else grad
            v = self._velocity.get(name)
            v = g.copy() if v is None else self.momentum * v + g
            mask = trainable.get(name)
            if mask is not None:
                v = np.where(mask, v, 0.0).astype(w.dtype)
            self._velocity[name] = v
            w -= (self.lr * v).astype(w.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"velocity/{name}": v.copy() for name, v in self._velocity.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self._velocity = {key.split("/", 1)[1]: np.array(v) for key, v in state.items() if key.startswith("velocity/")}


class MaskedAdamW:
    """AdamW (decoupled weight decay)."""

    def __init__(self, lr: float, weight_decay: float = 5e-4, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self._m: dict[str, np.ndarray] = {}
        self._v: dict[str, np.ndarray] = {}
        self._t = 0

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray],
             trainable: Mapping[str, np.ndarray]) -> None:
        self._t += 1
        b1, b2 = self.betas
        for name, grad in grads.items():
            w = params[name]
            m = b1 * self._m.get(name, 0.0) + (1 - b1) * grad
            v = b2 * self._v.get(name, 0.0) + (1 - b2) * grad * grad
            self._m[name], self._v[name] = m, v
            update = (m / (1 - b1 ** self._t)) / (np.sqrt(v / (1 - b2 ** self._t)) + self.eps) + self.weight_decay * w
            mask = trainable.get(name)
            if mask is not None:
                update = np.where(mask, update, 0.0)
            w -= (self.lr * update).astype(w.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self._t)}
        state.update((f"m/{name}", np.array(m)) for name, m in self._m.items())
        state.update((f"v/{name}", np.array(v)) for name, v in self._v.items())
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self._t = int(state.get("t", 0))
        self._m = {key[2:]: np.array(v) for key, v in state.items() if key.startswith("m/")}
        self._v = {key[2:]: np.array(v) for key, v in state.items() if key.startswith("v/")}


def make_optimizer(name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    if name == "sgd":
        return MaskedSGD(lr, momentum, weight_decay)
    if name == "adamw":
        return MaskedAdamW(lr, weight_decay)
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
