"""The INQ loop against a numpy backend (the GradientBackend protocol), independent of onnxruntime."""

import numpy as np
import pytest

from inq_onnx.data import Dataset
from inq_onnx.errors import ConfigError, TrainingError
from inq_onnx.quantizer import layer_levels, quantize
from inq_onnx.retrain import RetrainConfig, run_inq
from inq_onnx.sources import Examples


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


def examples(x, y):
    """Inputs `x` with targets `y`, in memory."""
    return Examples(Dataset({"x": x}, y))


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
    params, steps = run_inq(backend, levels, portions, examples(x, y), config)

    assert np.array_equal(params["w"], quantize(params["w"], levels["w"]))  # everything on a level
    assert [round(s.frozen_fraction, 2) for s in steps] == [0.31, 0.61, 1.0]  # round(p * 36) / 36
    assert all(len(s.epoch_losses) == 3 for s in steps[:-1]) and steps[-1].epoch_losses == []
    # Writes per retraining step: the freeze, then one per batch. Within a step the frozen entries never move,
    # and every other entry does.
    writes = 1 + config.epochs * (len(x) // config.batch_size)
    previous = np.zeros(params["w"].shape, bool)
    for k, portion in enumerate(portions[:-1]):
        block = np.stack(backend.history[k * writes:(k + 1) * writes])
        fixed = np.all(block == block[0], axis=0)
        assert fixed.sum() == round(portion * fixed.size)
        assert np.array_equal(block[0][fixed], quantize(block[0][fixed], levels["w"]))
        assert np.all(fixed[previous])  # frozen earlier, still frozen
        if strategy == "magnitude":  # the largest magnitudes among those not yet frozen, as they were then
            before = backend.history[k * writes - 1] if k else w_true + 0.05
            newly = fixed & ~previous
            assert np.abs(before[newly]).min() >= np.abs(before[~fixed]).max()
        previous = fixed


class TargetBackend:
    """Loss 0.5 * |w - target|^2: retraining pulls every free weight to `target`."""

    def __init__(self, w, target):
        self.parameter_names = ["w"]
        self.w, self.target = w.copy(), target

    def get_parameters(self):
        return {"w": self.w.copy()}

    def set_parameters(self, values):
        self.w = values["w"].copy()

    def loss_and_gradients(self, inputs, target):
        return float(0.5 * np.sum((self.w - self.target) ** 2)), {"w": self.w - self.target}


def test_each_step_ranks_the_retrained_weights(monkeypatch):
    import inq_onnx.retrain as retrain

    masks = []
    original_grow = retrain.grow_frozen_mask

    def recording_grow(weights, frozen, *args):
        masks.append(original_grow(weights, frozen, *args))
        return masks[-1]

    monkeypatch.setattr(retrain, "grow_frozen_mask", recording_grow)
    w = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], np.float32)
    target = np.array([0.9, 0.8, 0.7, 0.6, 0.05, 0.04, 0.03, 0.02], np.float32)  # reverses the free weights' order
    run_inq(TargetBackend(w, target), {"w": layer_levels(w, 5)}, (0.25, 0.5, 1.0),
            examples(np.zeros((8, 1)), np.zeros(8)),
            RetrainConfig(epochs=20, batch_size=8, lr=0.5, momentum=0.0, weight_decay=0.0))
    assert np.flatnonzero(masks[0]).tolist() == [0, 1]
    # Step 2 freezes the largest of the retrained weights (0.7, 0.6 at 2, 3), not of the original (0.6, 0.5).
    assert np.flatnonzero(masks[1] & ~masks[0]).tolist() == [2, 3]
    assert masks[2].all()


def test_optimizer_state_restarts_at_every_step(monkeypatch):
    import inq_onnx.retrain as retrain

    made = []
    original_make = retrain.make_optimizer
    monkeypatch.setattr(retrain, "make_optimizer", lambda *a, **k: made.append(a) or original_make(*a, **k))
    x, y, w_true = _problem(4)
    run_inq(LinearBackend(w_true, np.zeros(3, np.float32)), {"w": layer_levels(w_true, 5)}, (0.5, 0.75, 0.875, 1.0),
            examples(x, y), RetrainConfig(epochs=1, lr=1e-3))
    assert len(made) == 3  # one fresh optimizer per retraining step; none after the last, full step


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
    params, steps = run_inq(backend, levels, (0.5, 0.75, 1.0), examples(x, y),
                            RetrainConfig(epochs=20, batch_size=32, lr=0.02, weight_decay=0.0))

    def mse(w, b):
        return float(np.mean((x @ w + b - y) ** 2))

    assert mse(params["w"], params["b"]) < 0.5 * mse(one_shot, np.zeros(3))
    assert steps[0].epoch_losses[-1] < steps[0].epoch_losses[0]


def test_frozen_entries_unchanged_within_a_step_with_adamw():
    x, y, w_true = _problem(2)
    levels = {"w": layer_levels(w_true, 5)}
    backend = LinearBackend(w_true, np.zeros(3, np.float32))
    run_inq(backend, levels, (0.5, 1.0), examples(x, y), RetrainConfig(epochs=2, lr=0.01, optimizer="adamw"))
    first = backend.history[0]
    frozen = np.abs(w_true) >= np.sort(np.abs(w_true).ravel())[::-1][17]
    for snapshot in backend.history[1:-1]:
        assert np.array_equal(snapshot[frozen], first[frozen])
        assert not np.array_equal(snapshot[~frozen], first[~frozen]) or snapshot is first


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, r"epochs \(--epochs\)"), ({"batch_size": 0}, r"batch_size \(--batch-size\)"),
    ({"lr": 0}, r"lr \(--lr\) must be a finite number > 0"), ({"seed": -1}, r"seed \(--seed\) must be"),
    ({"lr": float("inf")}, r"lr \(--lr\) must be a finite number"),
    ({"weight_decay": float("nan")}, r"weight_decay \(--weight-decay\) must be"),
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
        run_inq(backend, {"w": layer_levels(w_true, 5)}, (0.5, 1.0), examples(x, y * 1e30),
                RetrainConfig(epochs=3, lr=1e3))


def test_evaluate_scores_every_step_after_its_retraining():
    x, y, w_true = _problem()
    backend = LinearBackend(w_true + 0.05, np.zeros(3, np.float32))
    levels = {"w": layer_levels(w_true + 0.05, 4)}
    seen = []

    def evaluate(params):  # the frozen fraction at this point, and whether every weight sits on a level
        seen.append(np.array_equal(params["w"], quantize(params["w"], levels["w"])))
        return float(np.mean(params["w"] == quantize(params["w"], levels["w"])))

    _, steps = run_inq(backend, levels, (0.5, 0.75, 1.0), examples(x, y), RetrainConfig(epochs=1, lr=0.05),
                       evaluate=evaluate)
    assert seen == [False, False, True]  # after retraining the float part; after the last freeze
    assert steps[0].accuracy == pytest.approx(0.5, abs=0.03) and steps[1].accuracy == pytest.approx(0.75, abs=0.03)
    assert steps[2].accuracy == 1.0
    _, unscored = run_inq(LinearBackend(w_true, np.zeros(3, np.float32)), levels, (0.5, 1.0), examples(x, y),
                          RetrainConfig(epochs=1, lr=0.05))
    assert [s.accuracy for s in unscored] == [None, None]


# -- the loss probe (a rate the recipe chose) -----------------------------------------------------------------------

def test_a_rate_that_wrecks_the_first_step_is_lowered_until_the_probe_stops_falling():
    from inq_onnx.retrain import LR_BACKOFF

    x, y, w_true = _problem()
    levels = {"w": layer_levels(w_true + 0.05, 4)}
    portions = (0.5, 0.75, 1.0)
    too_high = RetrainConfig(epochs=2, batch_size=32, lr=2.0, decay="none")  # past stable for this problem
    _, plain = run_inq(LinearBackend(w_true + 0.05, np.zeros(3, np.float32)), levels, portions, examples(x, y),
                       too_high)
    assert plain[0].epoch_losses[-1] > 10 and not plain[0].tried  # no probe: the loss ran away
    seen = []
    params, steps = run_inq(LinearBackend(w_true + 0.05, np.zeros(3, np.float32)), levels, portions,
                            examples(x, y), too_high, back_off=True, progress=lambda *call: seen.append(call))
    first = steps[0]
    # Progress counts on over the rates tried: one run of the step per rate, never back to zero.
    runs = len(first.tried) + 1
    first_step = [(done, total) for step, _, done, total, _ in seen if step == 0]
    assert [done for done, _ in first_step] == list(range(1, len(first_step) + 1))
    assert first_step[-1][0] == first_step[-1][1] == runs * 2 * (len(x) // 32)
    rates = [rate for rate, _ in first.tried]
    assert rates[0] == too_high.lr and first.lr < too_high.lr
    assert sorted(rates + [first.lr], reverse=True) == [too_high.lr / LR_BACKOFF ** k for k in range(len(rates) + 1)]
    assert first.probe_end < first.probe_start and first.probe_end < min(probe for _, probe in first.tried)
    assert first.epoch_losses[-1] < 0.2
    assert steps[1].lr == first.lr  # later steps keep the lowered rate
    assert np.isfinite(params["w"]).all() and np.array_equal(params["w"], quantize(params["w"], levels["w"]))


def test_with_a_good_rate_the_probe_changes_nothing_but_one_trial():
    x, y, w_true = _problem()
    levels = {"w": layer_levels(w_true + 0.05, 4)}
    config = RetrainConfig(epochs=2, batch_size=32, lr=0.01)
    plain = run_inq(LinearBackend(w_true + 0.05, np.zeros(3, np.float32)), levels, (0.5, 1.0), examples(x, y), config)
    probed = run_inq(LinearBackend(w_true + 0.05, np.zeros(3, np.float32)), levels, (0.5, 1.0), examples(x, y), config,
                     back_off=True)
    # The first step also tried a quarter of the rate; it fitted worse, so the run is the plain one exactly.
    assert probed[1][0].lr == config.lr and [rate for rate, _ in probed[1][0].tried] == [config.lr / 4]
    np.testing.assert_array_equal(probed[0]["w"], plain[0]["w"])
    assert probed[1][0].epoch_losses == plain[1][0].epoch_losses
