"""Checkpoints after every INQ step and resuming from them: the same model as an uninterrupted run, byte for byte."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inq_onnx.checkpoint import CHECKPOINT_FILE, CheckpointStore, InqState, checkpoint_identity
from inq_onnx.data import Dataset
from inq_onnx.errors import ConfigError
from inq_onnx.quantizer import layer_levels
from inq_onnx.retrain import RetrainConfig, run_inq

from models import conv_gemm_model, random_inputs
from test_retrain import LinearBackend, _problem, examples

PORTIONS = (0.5, 0.75, 0.875, 1.0)


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return InqState(2, {"w": rng.standard_normal((3, 4)).astype(np.float32), "odd/name:0": np.float32(1.5)},
                    {"w": rng.random((3, 4)) < 0.5}, np.random.default_rng(7).bit_generator.state,
                    {"velocity/w": rng.standard_normal((3, 4)).astype(np.float32)},
                    [{"portion": 0.5, "frozen_fraction": 0.5, "epoch_losses": [1.0, 0.5]}])


def _identity(model_seed=0, data_seed=0, lr=1e-3):
    x = random_inputs(data_seed, 8)
    return checkpoint_identity(conv_gemm_model(model_seed), Dataset({"x": x}, np.arange(8)).fingerprint(),
                               {"lr": lr, "bits": 5})


def test_a_checkpoint_reads_back_exactly(tmp_path):
    state = _state()
    CheckpointStore(tmp_path / "ck", _identity()).save(state)
    loaded = CheckpointStore(tmp_path / "ck", _identity()).load()
    assert loaded.steps_done == 2 and loaded.reports == state.reports and loaded.rng_state == state.rng_state
    for name in ("params", "frozen", "optimizer"):
        ours, theirs = getattr(state, name), getattr(loaded, name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert theirs[key].dtype == np.asarray(ours[key]).dtype
            assert np.array_equal(theirs[key], ours[key])
    assert sorted(os.listdir(tmp_path / "ck")) == [CHECKPOINT_FILE]  # no temporary file left behind


def test_removing_a_checkpoint_takes_what_a_kill_mid_write_left(tmp_path):
    store = CheckpointStore(tmp_path / "ck", _identity())
    store.save(_state())
    (tmp_path / "ck" / f".{CHECKPOINT_FILE}.x1y2.tmp").write_bytes(b"PK half")
    assert store.load().steps_done == 2  # the torn temporary file is not the checkpoint
    store.remove()
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("identity, message", [
    (_identity(model_seed=1), "belongs to another model"),
    (_identity(data_seed=1), "was made with other data"),
    (_identity(lr=0.01), r"other options \(lr 0.001 -> 0.01\)"),
])
def test_a_checkpoint_of_another_run_is_refused(tmp_path, identity, message):
    CheckpointStore(tmp_path, _identity()).save(_state())
    with pytest.raises(ConfigError, match=message):
        CheckpointStore(tmp_path, identity).load()


def test_missing_or_broken_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        CheckpointStore(tmp_path / "nope", _identity()).load()
    with pytest.raises(ConfigError, match="no checkpoint in"):
        CheckpointStore(tmp_path, _identity()).load()
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        CheckpointStore(tmp_path, _identity()).load()


@pytest.mark.parametrize("optimizer, strategy", [("sgd", "magnitude"), ("adamw", "random")])
def test_resuming_from_any_step_gives_the_uninterrupted_result(optimizer, strategy):
    x, y, w_true = _problem()
    levels = {"w": layer_levels(w_true, 4)}
    config = RetrainConfig(epochs=2, batch_size=32, lr=0.02, optimizer=optimizer, strategy=strategy, seed=3)
    states = []
    full, full_reports = run_inq(LinearBackend(w_true + 0.05, np.zeros(3, np.float32)), levels, PORTIONS,
                                 examples(x, y), config, checkpoint=states.append)
    assert [s.steps_done for s in states] == [1, 2, 3]  # after every retrained step; the last one only freezes
    for state in states:
        # A fresh backend still holds the original weights: everything must come from the state.
        resumed, reports = run_inq(LinearBackend(w_true + 0.05, np.zeros(3, np.float32)), levels, PORTIONS,
                                   examples(x, y), config, resume_from=state)
        for name in full:
            assert resumed[name].tobytes() == full[name].tobytes()
        assert reports == full_reports


def test_a_state_for_other_parameters_is_refused():
    x, y, w_true = _problem()
    state = InqState(1, {"w": np.zeros((12, 3), np.float32)}, {"w": np.zeros((12, 3), bool)},
                     np.random.default_rng(0).bit_generator.state)
    with pytest.raises(ConfigError, match="other parameters"):
        run_inq(LinearBackend(w_true, np.zeros(3, np.float32)), {"w": layer_levels(w_true, 4)}, PORTIONS,
                examples(x, y), RetrainConfig(epochs=1, lr=0.01), resume_from=state)


# -- end to end, with onnxruntime-training ----------------------------------------------------------------------

# Quantizes in a child process; the progress callback sleeps per batch so that the run lasts long enough to be
# killed mid-way (sleeping changes no number).
_CHILD = """
import sys, time
try:
    import inqdev  # noqa: F401  (development checkouts: makes inq_onnx.cli resolve; absent when installed)
except ImportError:
    pass
from inq_onnx.api import quantize
from inq_onnx.pipeline import QuantizeConfig
from inq_onnx.retrain import RetrainConfig
config = QuantizeConfig(bits=4, training=RetrainConfig(epochs=3, batch_size=8, seed=5))
quantize(sys.argv[1], config, sys.argv[2], sys.argv[3], progress=lambda *a: time.sleep(float(sys.argv[4])))
"""


@pytest.fixture
def files(tmp_path):
    onnx.save(conv_gemm_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=random_inputs(0, 48), labels=np.random.default_rng(0).integers(0, 5, 48))
    return tmp_path


def _child(files, output, delay):
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(files / "model.onnx"), str(files / "data.npz"),
                             str(output), str(delay)], cwd=files, stderr=subprocess.PIPE)


@pytest.mark.train
def test_kill_9_then_resume_gives_the_uninterrupted_model_byte_for_byte(files):
    from inq_onnx.cli.main import cli

    uninterrupted = _child(files, files / "whole.onnx", 0)
    assert uninterrupted.wait(120) == 0, uninterrupted.stderr.read().decode()
    assert not (files / "whole.onnx.ckpt").exists()  # removed once the output is written

    killed = _child(files, files / "out.onnx", 0.02)
    checkpoint = files / "out.onnx.ckpt" / CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert killed.poll() is None, "the run ended before it could be interrupted"
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(30) == -signal.SIGKILL
    assert not (files / "out.onnx").exists()

    result = CliRunner().invoke(cli, ["quantize", str(files / "model.onnx"), "--data", str(files / "data.npz"),
                                      "-o", str(files / "out.onnx"), "--bits", "4", "--epochs", "3",
                                      "--batch-size", "8", "--seed", "5", "--quiet",
                                      "--resume", str(checkpoint.parent)])
    assert result.exit_code == 0, result.output
    assert f"Note: resumed from {checkpoint.parent} after INQ step" in result.output
    assert (files / "out.onnx").read_bytes() == (files / "whole.onnx").read_bytes()
    assert not checkpoint.parent.exists()


@pytest.mark.train
def test_resume_with_other_options_is_one_error_line(files):
    from inq_onnx.cli.main import cli

    killed = _child(files, files / "out.onnx", 0.02)
    checkpoint = files / "out.onnx.ckpt" / CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    base = ["quantize", str(files / "model.onnx"), "--data", str(files / "data.npz"), "-o", str(files / "out.onnx"),
            "--bits", "4", "--epochs", "3", "--batch-size", "8", "--quiet", "--resume", str(checkpoint.parent)]
    for extra, message in [(["--seed", "6"], "other options (training.seed 5 -> 6)"),
                           (["--seed", "5", "--no-retrain"], "this run does not retrain")]:
        result = CliRunner().invoke(cli, base + extra)
        assert result.exit_code == 2, result.output  # a usage error, as ConfigErrors are
        assert [line for line in result.output.splitlines() if line.startswith("Error: ")] == [
            line for line in result.output.splitlines() if message in line], result.output
    assert checkpoint.exists()  # a refused resume keeps the checkpoint


@pytest.mark.train
def test_no_checkpoint_writes_none_and_a_stale_one_is_named(files):
    from inq_onnx.api import quantize
    from inq_onnx.pipeline import QuantizeConfig

    config = QuantizeConfig(bits=4, training=RetrainConfig(epochs=1, batch_size=8))
    folder = files / "out.onnx.ckpt"
    seen = []
    quantize(files / "model.onnx", config, files / "data.npz", files / "out.onnx", checkpoints=False,
             progress=lambda *args: seen.append(folder.exists()))
    assert seen and not any(seen)
    CheckpointStore(folder, _identity()).save(_state())
    with pytest.warns(UserWarning, match=r"out.onnx.ckpt holds the checkpoint of an interrupted run; this run "
                                         r"replaces it \(--resume .*out.onnx.ckpt would continue it\)"):
        quantize(files / "model.onnx", config, files / "data.npz", files / "out.onnx")
    assert not folder.exists()


# The accuracy-control loop (--max-drop) over runs that retrain: a 2-bit model whose Gemm has to go float, so the
# loop makes two runs; the child is killed during the second.
_CONTROL_CHILD = """
import sys, time
try:
    import inqdev  # noqa: F401
except ImportError:
    pass
from inq_onnx.api import quantize
from inq_onnx.pipeline import QuantizeConfig
from inq_onnx.retrain import RetrainConfig
config = QuantizeConfig(bits=2, training=RetrainConfig(epochs=2, batch_size=8, seed=5))
quantize(sys.argv[1], config, sys.argv[2], sys.argv[3], progress=lambda *a: time.sleep(float(sys.argv[4])),
         val_data_path=sys.argv[5], max_drop=0.0)
"""


@pytest.mark.train
def test_kill_9_during_accuracy_control_then_resume_gives_the_uninterrupted_model(tmp_path):
    from inq_onnx.cli.main import cli
    from test_accuracy_control import sensitive_model, validation

    onnx.save(sensitive_model(exact=False), tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=random_inputs(5, 48))
    np.savez(tmp_path / "val.npz", x=validation().inputs["x"])

    def child(output, delay):
        return subprocess.Popen([sys.executable, "-c", _CONTROL_CHILD, str(tmp_path / "model.onnx"),
                                 str(tmp_path / "data.npz"), str(output), str(delay), str(tmp_path / "val.npz")],
                                cwd=tmp_path, stderr=subprocess.PIPE)

    uninterrupted = child(tmp_path / "whole.onnx", 0)
    assert uninterrupted.wait(120) == 0, uninterrupted.stderr.read().decode()
    assert not (tmp_path / "whole.onnx.ckpt").exists()

    killed = child(tmp_path / "out.onnx", 0.02)
    folder = tmp_path / "out.onnx.ckpt"
    deadline = time.monotonic() + 120
    while not (folder / "run-1" / CHECKPOINT_FILE).exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert killed.poll() is None, "the loop ended before its second run could be interrupted"
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(30) == -signal.SIGKILL
    assert (folder / "control.json").is_file() and not (tmp_path / "out.onnx").exists()

    result = CliRunner().invoke(cli, ["quantize", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "data.npz"),
                                      "--val-data", str(tmp_path / "val.npz"), "--max-drop", "0",
                                      "-o", str(tmp_path / "out.onnx"), "--bits", "2", "--epochs", "2",
                                      "--batch-size", "8", "--seed", "5", "--quiet", "--resume", str(folder)])
    assert result.exit_code == 0, result.output
    assert "Max drop 0 held" in result.output
    assert f"Note: accuracy control resumed from {folder} after 1 finished run(s)" in result.output
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "whole.onnx").read_bytes()
    assert not folder.exists()
