"""The retraining recipe's choices: steps per INQ step from the data size, the lr range test, decay, loss, overrides."""

import math

import numpy as np
import onnx
import pytest

from inq_onnx.errors import ConfigError
from inq_onnx.quantizer import layer_levels, quantize
from inq_onnx.recipe import (FIT_ACCURACY, MIN_STEPS_PER_INQ_STEP, choose_epochs, choose_loss, choose_recipe,
                             lr_range_test)
from inq_onnx.retrain import RetrainConfig, run_inq
from inq_onnx.training.optim import COSINE_FLOOR, decayed_lr, make_optimizer

from models import conv_gemm_model, random_inputs
from test_retrain import examples


class LeastSquaresBackend:
    """y = x @ w: plain SGD on it diverges above a rate set by x's largest singular value."""

    def __init__(self, w):
        self.parameter_names = ["w"]
        self.params = {"w": w.copy()}

    def get_parameters(self):
        return {k: v.copy() for k, v in self.params.items()}

    def set_parameters(self, values):
        self.params.update((k, v.copy()) for k, v in values.items())

    def loss_and_gradients(self, inputs, target):
        x = inputs["x"]
        with np.errstate(all="ignore"):  # diverging on purpose overflows
            err = x @ self.params["w"] - target
            return float(0.5 * np.mean(np.sum(err ** 2, axis=1))), {"w": x.T @ err / len(x)}


def _problem(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((512, 12)) * scale).astype(np.float32)
    w_true = (rng.standard_normal((12, 3)) * 0.4).astype(np.float32)
    return x, x @ w_true, w_true


def _train_loss(x, y, w, lr, batches=200):
    """Final full-data loss after momentum SGD at a fixed `lr` from `w`."""
    backend = LeastSquaresBackend(w)
    optimizer = make_optimizer("sgd", lr, weight_decay=0.0)
    params = backend.get_parameters()
    for i in range(batches):
        index = np.arange(i * 32, (i + 1) * 32) % len(x)
        _, grads = backend.loss_and_gradients({"x": x[index]}, y[index])
        optimizer.step(params, grads, {})
        backend.set_parameters(params)
        if not np.isfinite(params["w"]).all():
            return math.inf
    return backend.loss_and_gradients({"x": x}, y)[0]


@pytest.mark.parametrize("scale", [1.0, 2.0, 4.0])
def test_range_test_picks_a_finite_rate_below_divergence_that_trains(scale):
    x, y, w_true = _problem(scale=scale)
    start = w_true + 0.3
    backend = LeastSquaresBackend(start)
    config = RetrainConfig(weight_decay=0.0)
    test = lr_range_test(backend, examples(x, y), config, {"w": layer_levels(start, 4)}, 0.3)

    assert test.divergence_lr is not None and math.isfinite(test.chosen_lr)
    assert test.chosen_lr < test.divergence_lr
    assert np.array_equal(backend.params["w"], start)  # the parameters are put back
    # The rate found moves with the data's scale (gradients grow with scale^2) ...
    assert 0.1 / scale ** 2 < test.divergence_lr < 100 / scale ** 2
    # ... and is one that trains, where the divergence rate times ten does not.
    assert _train_loss(x, y, start, test.chosen_lr) < 0.1 * _train_loss(x, y, start, 0.0)
    assert not _train_loss(x, y, start, 10 * test.divergence_lr) < _train_loss(x, y, start, 0.0)


def test_range_test_without_divergence_takes_a_tenth_of_the_top_rate():
    x, y, w_true = _problem(scale=0.1)  # stable up to a rate of about 250, beyond the test's top rate
    test = lr_range_test(LeastSquaresBackend(w_true), examples(x, y), RetrainConfig(weight_decay=0.0),
                         {"w": layer_levels(w_true, 4)}, 0.3)
    assert test.divergence_lr is None and test.chosen_lr == pytest.approx(test.lrs[-1] / 10)


def test_range_test_keeps_the_frozen_portion_on_its_levels():
    x, y, w_true = _problem()
    backend = LeastSquaresBackend(w_true)
    seen = []
    original = backend.set_parameters
    backend.set_parameters = lambda values: (seen.append(values["w"].copy()), original(values))
    levels = layer_levels(w_true, 3)
    lr_range_test(backend, examples(x, y), RetrainConfig(), {"w": levels}, 0.5, batches=20)
    written = np.stack(seen[:-1])  # the last write restores the start
    fixed = np.all(written == written[0], axis=0)
    assert fixed.sum() >= round(0.5 * fixed.size)
    assert np.array_equal(written[0][fixed], quantize(written[0][fixed], levels))


def test_epochs_scale_with_data_size():
    for bits in (5, 4, 3, 2):
        wanted = MIN_STEPS_PER_INQ_STEP[bits]
        for count in (100, 1347, 5000, 20000, 200000):
            epochs, why = choose_epochs(count, 32, bits)
            batches = -(-count // 32)
            assert epochs * batches >= wanted or epochs == 50  # enough optimizer steps ...
            assert epochs == 1 or (epochs - 1) * batches < wanted  # ... and not an epoch more
            assert f"{bits}-bit" in why
    # Large data: one epoch per INQ step, so retraining time grows in proportion to the data.
    assert choose_epochs(200000, 32, 3)[0] == choose_epochs(400000, 32, 3)[0] == 1
    # Fewer bits, more optimizer steps per INQ step.
    assert choose_epochs(1347, 32, 2)[0] > choose_epochs(1347, 32, 5)[0]


def test_cosine_decay_falls_from_the_rate_to_its_floor():
    rates = [decayed_lr(0.1, "cosine", p) for p in np.linspace(0, 1, 11)]
    assert rates[0] == pytest.approx(0.1) and rates[-1] == pytest.approx(0.1 * COSINE_FLOOR)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert decayed_lr(0.1, "none", 0.7) == 0.1
    with pytest.raises(ConfigError, match="decay must be one of"):
        decayed_lr(0.1, "step", 0.5)


def test_loss_choice():
    labels = np.arange(10)
    assert choose_loss("auto", labels, 1.0)[0] == "distillation"
    assert choose_loss("auto", labels, FIT_ACCURACY - 0.05)[0] == "labels"
    assert choose_loss("auto", labels, None)[0] == "labels"
    assert choose_loss("auto", None, None)[0] == "distillation"
    assert choose_loss("cross-entropy", labels, 1.0) == ("labels", "set by --loss")
    assert choose_loss("distillation", labels, 0.1) == ("distillation", "set by --loss")


def test_user_settings_win_and_skip_the_range_test():
    x, y, w_true = _problem()
    backend = LeastSquaresBackend(w_true)
    calls = []
    original = backend.loss_and_gradients
    backend.loss_and_gradients = lambda *a: (calls.append(1), original(*a))[1]
    levels = {"w": layer_levels(w_true, 4)}
    config = RetrainConfig(epochs=3, lr=0.02, decay="none")
    recipe = choose_recipe(backend, examples(x, y), config, levels, (0.5, 1.0), 4, "labels", "set by --loss")
    assert (recipe.epochs, recipe.lr, recipe.decay, recipe.range_test) == (3, 0.02, "none", None)
    assert calls == []  # nothing was measured
    assert "set by --lr" in recipe.lines()[1] and "set by --epochs" in recipe.lines()[0]

    recipe = choose_recipe(backend, examples(x, y), RetrainConfig(epochs=3), levels, (0.5, 1.0), 4, "labels", "")
    assert recipe.epochs == 3 and recipe.range_test is not None and recipe.lr == recipe.range_test.chosen_lr
    assert recipe.decay == "cosine" and "range test" in recipe.lr_why
    trained = recipe.training(RetrainConfig(epochs=3, seed=4))
    assert (trained.lr, trained.epochs, trained.decay, trained.seed) == (recipe.lr, 3, "cosine", 4)


def test_run_inq_needs_a_chosen_rate():
    x, y, w_true = _problem()
    with pytest.raises(ConfigError, match="needs epochs and lr set"):
        run_inq(LeastSquaresBackend(w_true), {"w": layer_levels(w_true, 4)}, (0.5, 1.0), examples(x, y),
                RetrainConfig(epochs=1))


def test_bad_decay_is_refused():
    with pytest.raises(ConfigError, match=r"decay \(--decay\) must be one of none, cosine"):
        RetrainConfig(decay="linear")


@pytest.mark.train
def test_quantize_reports_the_recipe_and_honours_overrides(tmp_path):
    from click.testing import CliRunner

    from inq_onnx.cli.main import cli

    onnx.save(conv_gemm_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=random_inputs(0, 40), labels=np.random.default_rng(0).integers(0, 5, 40))
    base = ["quantize", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "data.npz"), "--portions", "0.5,1",
            "--quiet", "-o", str(tmp_path / "q.onnx")]
    result = CliRunner().invoke(cli, base + ["--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "Retraining: epochs per INQ step 1: set by --epochs" in result.output
    assert "range test on the training data" in result.output and "Retraining: decay cosine" in result.output
    # Random labels a random model does not fit: the labels are the targets.
    assert "Retraining: loss labels: the original model does not fit the training labels" in result.output

    result = CliRunner().invoke(cli, base + ["--lr", "0.003", "--decay", "none", "--loss", "distillation"])
    assert result.exit_code == 0, result.output
    assert "Retraining: learning rate 0.003: set by --lr" in result.output
    assert "Retraining: decay none: set by --decay" in result.output
    assert "Retraining: loss distillation: set by --loss" in result.output
    assert "Retraining: epochs per INQ step 50:" in result.output  # 2 batches an epoch: capped
