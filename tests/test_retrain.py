"""The INQ loop against a numpy backend (the GradientBackend protocol), independent of onnxruntime."""

import numpy as np
import pytest

from inq_onnx.errors import ConfigError, TrainingError
from inq_onnx.quantizer import layer_levels, quantize
from inq_onnx.retrain import RetrainConfig, run_inq


class LinearBackend:
    """Least squares y = x @ W + b; records every parameter set the loop writes."""

    def __init__(self, w, b):
        self.parameter_names = ["w", "b"]
        self.params = {"w": w.copy(), "b": b.copy()}
        self.history = []

    def get_parameters(self):
        return {k: v.copy() for k, v in self.params.items()}

    def set_parameters(self, values):
        for k, v in values.items():
            self.params[k] = v.copy()
        self.history.append(self.params["w"].copy())

    def loss_and_gradients(self, inputs, target):
        x = inputs["x"]
        err = x @ self.params["w"] + self.params["b"] - target
        n = len(x)
        return float(0.5 * np.mean(np.sum(err ** 2, axis=1))), {"w": x.T @ err / n, "b": err.mean(axis=0)}


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, 12)).astype(np.float32)
    w_true = (rng.standard_normal((12, 3)) * 0.4).astype(np.float32)
    y = x @ w_true + 0.01 * rng.standard_normal((256, 3)).astype(np.float32)
    return x, y, w_true


@pytest.mark.parametrize("strategy", ["magnitude", "random"])
def test_frozen_weights_stay_exactly_on_their_levels(strategy):
    x, y, w_true = _problem()
    backend = LinearBackend(w_true + 0.05, np.zeros(3, np.float32))
    levels = {"w": layer_levels(w_true + 0.05, 4)}
    portions = (0.3, 0.6, 1.0)
    config = RetrainConfig(epochs=3, batch_size=32, lr=0.05, strategy=strategy)
    params, steps = run_inq(backend, levels, portions, {"x": x}, y, config)

    assert np.array_equal(params["w"], quantize(params["w"], levels["w"]))  # everything on a level
    assert [round(s.frozen_fraction, 2) for s in steps] == [0.31, 0.61, 1.0]  # round(p * 36) / 36
    assert all(len(s.epoch_losses) == 3 for s in steps[:-1]) and steps[-1].epoch_losses == []
    # Writes per retraining step: the freeze, then one per batch. Within a step the frozen entries never move.
    writes = 1 + config.epochs * (len(x) // config.batch_size)
    previous = np.zeros(params["w"].shape, bool)
    for k, portion in enumerate(portions[:-1]):
        block = np.stack(backend.history[k * writes:(k + 1) * writes])
        fixed = np.all(block == block[0], axis=0) & (block[0] == quantize(block[0], levels["w"]))
        assert fixed.sum() >= round(portion * fixed.size)
        assert np.all(fixed[previous])  # frozen earlier, still frozen
        previous = fixed


def test_retraining_compensates_quantization_error():
    # Redundant features (pairs of near-copies) let the still-float weights absorb the frozen ones' error.
    rng = np.random.default_rng(1)
    z = rng.standard_normal((256, 6)).astype(np.float32)
    x = np.concatenate([z, z + 0.1 * rng.standard_normal((256, 6)).astype(np.float32)], axis=1)
    w_true = (rng.standard_normal((12, 3)) * 0.4).astype(np.float32)
    y = x @ w_true
    levels = {"w": layer_levels(w_true, 3)}
    one_shot = quantize(w_true, levels["w"])
    backend = LinearBackend(w_true, np.zeros(3, np.float32))
    params, steps = run_inq(backend, levels, (0.5, 0.75, 1.0), {"x": x}, y,
                            RetrainConfig(epochs=20, batch_size=32, lr=0.02, weight_decay=0.0))

    def mse(w, b):
        return float(np.mean((x @ w + b - y) ** 2))

    assert mse(params["w"], params["b"]) < 0.5 * mse(one_shot, np.zeros(3))
    assert steps[0].epoch_losses[-1] < steps[0].epoch_losses[0]


def test_frozen_entries_unchanged_within_a_step_with_adamw():
    x, y, w_true = _problem(2)
    levels = {"w": layer_levels(w_true, 5)}
    backend = LinearBackend(w_true, np.zeros(3, np.float32))
    run_inq(backend, levels, (0.5, 1.0), {"x": x}, y, RetrainConfig(epochs=2, lr=0.01, optimizer="adamw"))
    first = backend.history[0]
    frozen = np.abs(w_true) >= np.sort(np.abs(w_true).ravel())[::-1][17]
    for snapshot in backend.history[1:-1]:
        assert np.array_equal(snapshot[frozen], first[frozen])
        assert not np.array_equal(snapshot[~frozen], first[~frozen]) or snapshot is first


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number"), ({"weight_decay": float("nan")}, "weight_decay must be"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"), ({"strategy": "x"}, "strategy must be one of"),
])
def test_bad_retrain_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RetrainConfig(**kwargs)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow that makes it diverge
def test_divergence_is_reported_not_packed():
    x, y, w_true = _problem(3)
    backend = LinearBackend(w_true, np.zeros(3, np.float32))
    with pytest.raises(TrainingError, match="diverged in step 1 .*lower --lr"):
        run_inq(backend, {"w": layer_levels(w_true, 5)}, (0.5, 1.0), {"x": x}, y * 1e30,
                RetrainConfig(epochs=3, lr=1e3))
