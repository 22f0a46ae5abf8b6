"""Data sources read batch by batch: exact shuffling over random access, passes over Python input dicts, and
retraining and validation that never hold the whole data."""

import gc
import weakref

import numpy as np
import onnx
import pytest
from PIL import Image

from inq_onnx.api import quantize, validate
from inq_onnx.checkpoint import CheckpointStore, checkpoint_identity
from inq_onnx.data import Dataset, open_data
from inq_onnx.errors import ConfigError, DataError, ModelError
from inq_onnx.images import ImageFolder, Preprocess
from inq_onnx.pipeline import QuantizeConfig
from inq_onnx.retrain import RetrainConfig
from inq_onnx.sources import SHUFFLE_BATCHES, IterableSource

from test_checkpoint import _state
from test_images import SIZE, Reader, image_model, pixels, write_folder


def _batches(count=10, size=4, seed=3):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((size, 3, SIZE, SIZE)).astype(np.float32),
             "labels": rng.integers(0, 2, size)} for _ in range(count)]


def _whole(batches):
    return np.concatenate([b["x"] for b in batches]), np.concatenate([b["labels"] for b in batches])


class RewindReader:
    """A CalibrationDataReader-style reader that can start over."""

    def __init__(self, batches):
        self.batches, self.rewinds = batches, 0
        self.rewind()

    def rewind(self):
        self.rewinds += 1
        self.pending = iter(self.batches)

    def get_next(self):
        return next(self.pending, None)


# -- exact shuffling over random access --------------------------------------------------------------------------

def test_a_dataset_is_read_in_the_order_the_generator_draws():
    x = np.arange(10, dtype=np.float32)[:, None]
    data = Dataset({"x": x}, np.arange(10))
    order = np.random.default_rng(4).permutation(10)
    got = [b.inputs["x"][:, 0].tolist() for b in data.batches(4, np.random.default_rng(4))]
    assert got == [order[:4].tolist(), order[4:8].tolist(), order[8:].tolist()]
    # endless: passes follow one another in full batches, each in a new order
    rng = np.random.default_rng(4)
    orders = np.concatenate([rng.permutation(10) for _ in range(3)])
    stream = data.batches(4, np.random.default_rng(4), endless=True)
    assert [next(stream).labels.tolist() for _ in range(7)] == orders[:28].reshape(7, 4).tolist()
    assert [b.labels.tolist() for b in data.batches(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_an_image_folder_reads_what_its_arrays_hold(tmp_path):
    write_folder(tmp_path, per_class=5)
    model = image_model()
    folder = open_data(tmp_path, model)
    assert isinstance(folder, ImageFolder) and len(folder) == 10
    images, labels = ImageFolder(tmp_path, folder.preprocess, "x").arrays()
    order = np.random.default_rng(1).permutation(10)
    batches = list(folder.batches(3, np.random.default_rng(1)))
    np.testing.assert_array_equal(np.concatenate([b.inputs["x"] for b in batches]), images[order])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), labels[order])


def test_a_model_input_of_no_known_type_is_a_model_error(tmp_path):
    write_folder(tmp_path, per_class=1)
    model = image_model()
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.UNDEFINED
    with pytest.raises(ModelError, match="model input x is not a tensor of a known element type"):
        open_data(tmp_path, model)


# -- input dicts from Python, read again for every pass ------------------------------------------------------------

@pytest.mark.parametrize("wrap", [list, lambda b: (lambda: iter(b)), RewindReader])
def test_re_readable_python_data_streams_in_batches_of_any_size(wrap):
    batches = _batches(5, size=3)
    x, labels = _whole(batches)
    source = open_data(wrap(batches), image_model())
    assert isinstance(source, IterableSource) and len(source) == 15
    np.testing.assert_array_equal(source.labels, labels)
    assert source.sample_shapes() == {"x": (3, SIZE, SIZE)}
    in_order = list(source.batches(4))
    assert [len(b.labels) for b in in_order] == [4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([b.inputs["x"] for b in in_order]), x)
    shuffled = list(source.batches(4, np.random.default_rng(0)))
    got = np.concatenate([b.inputs["x"] for b in shuffled])
    assert not np.array_equal(got, x)
    order = np.argsort(got[:, 0, 0, 0])
    np.testing.assert_array_equal(got[order], x[np.argsort(x[:, 0, 0, 0])])  # every sample exactly once
    np.testing.assert_array_equal(np.concatenate([b.labels for b in shuffled])[order],
                                  labels[np.argsort(x[:, 0, 0, 0])])  # with its own label
    np.testing.assert_array_equal(source.head(5).inputs["x"], x[:5])
    picked = np.array([1, 6, 7, 14])
    np.testing.assert_array_equal(np.concatenate([b.inputs["x"] for b in source.select(picked, 3)]), x[picked])


def test_python_data_is_shuffled_within_a_window():
    batches = _batches(40, size=1)  # 40 samples in 1-sample batches
    source = open_data(batches, image_model())
    x, _ = _whole(batches)
    window = SHUFFLE_BATCHES * 2
    positions = {x[i, 0, 0, 0]: i for i in range(len(x))}
    seen = [positions[v] for b in source.batches(2, np.random.default_rng(0)) for v in b.inputs["x"][:, 0, 0, 0]]
    assert sorted(seen) == list(range(40)) and seen != list(range(40))
    # the n-th sample out was read among the first window + n samples
    assert all(position < window + n + 1 for n, position in enumerate(seen))


def test_the_fingerprint_follows_the_samples_not_their_batches():
    batches = _batches(4, size=6)
    x, labels = _whole(batches)
    rebatched = [{"x": x[i:i + 4], "labels": labels[i:i + 4]} for i in range(0, 24, 4)]
    model = image_model()
    assert open_data(batches, model).fingerprint() == open_data(rebatched, model).fingerprint()
    changed = [dict(b) for b in batches]
    changed[2] = {"x": changed[2]["x"] + 1, "labels": changed[2]["labels"]}
    assert open_data(changed, model).fingerprint() != open_data(batches, model).fingerprint()


def test_python_data_that_changes_between_passes_is_refused():
    batches = _batches(3)
    calls = []

    def shrinking():
        calls.append(1)
        return iter(batches[:4 - len(calls)])

    source = open_data(shrinking, image_model())
    with pytest.raises(DataError, match="gave 8 samples in this pass and 12 in the first"):
        list(source.batches(4))
    bad = _batches(2) + [{"x": np.zeros((2, 3, SIZE, SIZE), np.float32)}]
    with pytest.raises(DataError, match="batch 2 lacks labels, the first batch has them"):
        open_data(bad, image_model())
    nan = _batches(2)
    nan[1]["x"][0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="batch 1: input x: data contains NaN or Inf"):
        open_data(nan, image_model())


@pytest.mark.parametrize("one_shot, kind", [(iter, "a one-shot iterator"),
                                            (lambda b: (batch for batch in b), "a one-shot iterator"),
                                            (Reader, r"a reader without rewind\(\)")])
def test_retraining_refuses_data_it_can_read_only_once(tmp_path, one_shot, kind):
    onnx.save(image_model(), tmp_path / "model.onnx")
    config = QuantizeConfig(bits=4, training=RetrainConfig(epochs=1, batch_size=4))
    with pytest.raises(DataError, match=f"the data is {kind}, and retraining reads it several times .* give a "
                                        f"list, an object whose __iter__ starts over, a function returning a fresh "
                                        f"iterator, or a reader with get_next\\(\\) and rewind\\(\\)"):
        quantize(tmp_path / "model.onnx", config, one_shot(_batches()), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


# -- retraining and validation, streamed -------------------------------------------------------------------------

def _save_npz(folder: ImageFolder, path):
    images, labels = folder.arrays()
    np.savez(path, x=images, **({"labels": labels} if labels is not None else {}))


@pytest.mark.train
@pytest.mark.parametrize("classes, loss", [(("cat", "dog"), "labels"), ((), "distillation")])
def test_retraining_from_a_folder_gives_the_model_the_npz_of_its_images_gives(tmp_path, classes, loss):
    onnx.save(image_model(), tmp_path / "model.onnx")
    write_folder(tmp_path / "images", classes=classes, per_class=10 if classes else 20)
    _save_npz(open_data(tmp_path / "images", image_model()), tmp_path / "images.npz")
    config = QuantizeConfig(bits=4, training=RetrainConfig(epochs=1, batch_size=6, seed=2), loss="auto")
    from_npz = quantize(tmp_path / "model.onnx", config, tmp_path / "images.npz", tmp_path / "a.onnx")
    from_folder = quantize(tmp_path / "model.onnx", config, tmp_path / "images", tmp_path / "b.onnx")
    assert from_folder.result.mode == from_npz.result.mode == loss
    assert from_folder.result.recipe == from_npz.result.recipe  # the range test read the same batches
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert from_folder.validation == from_npz.validation


class LiveSamples:
    """Counts the decoded samples of an ImageFolder alive at once (a batch lives while any view of it does)."""

    def __init__(self, monkeypatch):
        self.alive = self.peak = self.decoded = 0
        take = ImageFolder.take

        def counted(folder, index):
            batch = take(folder, index)
            count = len(batch.inputs[folder.input_name])
            self.alive += count
            self.decoded += count
            self.peak = max(self.peak, self.alive)
            weakref.finalize(batch.inputs[folder.input_name], self._release, count)
            return batch

        monkeypatch.setattr(ImageFolder, "take", counted)

    def _release(self, count):
        self.alive -= count


@pytest.mark.train
def test_retraining_and_validation_never_hold_the_whole_folder(tmp_path, monkeypatch):
    onnx.save(image_model(), tmp_path / "model.onnx")
    write_folder(tmp_path / "images", per_class=400)
    live = LiveSamples(monkeypatch)
    config = QuantizeConfig(bits=4, portions=(0.5, 1.0), training=RetrainConfig(epochs=1, batch_size=16))
    summary = quantize(tmp_path / "model.onnx", config, tmp_path / "images", tmp_path / "out.onnx",
                       report_dir=tmp_path / "report")  # scores every step, on up to 2,048 samples
    assert summary.result.recipe.range_test is not None and summary.validation.samples == 800
    assert live.decoded > 3 * 800  # the data was read several times ...
    # ... never more than two inference batches (one read while the last is in use) and a training batch at once
    assert live.peak <= 2 * 256 + 16
    gc.collect()
    before = live.peak = live.alive
    validate(tmp_path / "model.onnx", tmp_path / "out.onnx", tmp_path / "images", batch_size=64)
    assert live.peak - before <= 2 * 64


def test_validation_from_a_folder_equals_validation_from_its_npz(tmp_path):
    write_folder(tmp_path / "images", per_class=150)  # 300 images: two batches of 256 and 44
    _save_npz(open_data(tmp_path / "images", image_model()), tmp_path / "images.npz")
    onnx.save(image_model(), tmp_path / "model.onnx")
    onnx.save(image_model(seed=1), tmp_path / "other.onnx")
    seen = []
    from_folder = validate(tmp_path / "model.onnx", tmp_path / "other.onnx", tmp_path / "images",
                           progress=lambda done, total: seen.append((done, total)))
    from_npz = validate(tmp_path / "model.onnx", tmp_path / "other.onnx", tmp_path / "images.npz")
    assert from_folder == from_npz and from_folder.samples == 300
    assert from_folder.accuracy_original is not None and from_folder.outputs[0].top1_agreement is not None
    assert seen[-1] == (600, 600)


# -- resume ---------------------------------------------------------------------------------------------------------

def test_a_folder_fingerprint_changes_with_its_files(tmp_path):
    write_folder(tmp_path / "images", per_class=2)
    model = image_model()
    first = open_data(tmp_path / "images", model).fingerprint()
    assert open_data(tmp_path / "images", model).fingerprint() == first
    store = CheckpointStore(tmp_path / "ckpt", checkpoint_identity(model, first, {}))
    store.save(_state())
    # One image rewritten (flat: a smaller file, whatever the clock's resolution)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "images" / "dog" / "img1.png")
    again = CheckpointStore(tmp_path / "ckpt", checkpoint_identity(model, open_data(tmp_path / "images", model)
                                                                   .fingerprint(), {}))
    with pytest.raises(ConfigError, match="was made with other data"):
        again.load()
    assert open_data(tmp_path / "images", model, Preprocess(scale=1.0)).fingerprint() != \
        open_data(tmp_path / "images", model).fingerprint()


@pytest.mark.train
def test_resuming_from_a_folder_checks_its_files(tmp_path):
    onnx.save(image_model(), tmp_path / "model.onnx")
    write_folder(tmp_path / "images", per_class=6)
    config = QuantizeConfig(bits=4, training=RetrainConfig(epochs=1, batch_size=4, seed=1))
    quantize(tmp_path / "model.onnx", config, tmp_path / "images", tmp_path / "whole.onnx")

    def stop_in_step_two(step, *_):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize(tmp_path / "model.onnx", config, tmp_path / "images", tmp_path / "out.onnx",
                 progress=stop_in_step_two)
    checkpoint = tmp_path / "out.onnx.ckpt"
    assert checkpoint.is_dir()
    Image.fromarray(pixels(77)).save(tmp_path / "images" / "cat" / "extra.png")
    with pytest.raises(ConfigError, match="was made with other data"):
        quantize(tmp_path / "model.onnx", config, tmp_path / "images", tmp_path / "out.onnx", resume=checkpoint)
    (tmp_path / "images" / "cat" / "extra.png").unlink()
    summary = quantize(tmp_path / "model.onnx", config, tmp_path / "images", tmp_path / "out.onnx",
                       resume=checkpoint)
    assert any(note.startswith("resumed from") for note in summary.result.notes)
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "whole.onnx").read_bytes()


@pytest.mark.train
@pytest.mark.parametrize("wrap", [list, lambda b: (lambda: iter(b)), RewindReader])
def test_retraining_reads_python_data_again_for_every_pass(tmp_path, wrap):
    onnx.save(image_model(), tmp_path / "model.onnx")
    batches = _batches(6)
    source = wrap(batches)
    config = QuantizeConfig(bits=4, portions=(0.5, 1.0), training=RetrainConfig(epochs=2, batch_size=5))
    summary = quantize(tmp_path / "model.onnx", config, source, tmp_path / "out.onnx")
    assert isinstance(summary.result.dataset, IterableSource) and len(summary.result.dataset) == 24
    assert summary.result.mode == "labels" and summary.validation.samples == 24
    if isinstance(source, RewindReader):
        assert source.rewinds > 5  # counted, the loss chosen, the range test, two epochs, checks, validation
    x, labels = _whole(batches)
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    from_npz = validate(tmp_path / "model.onnx", tmp_path / "out.onnx", tmp_path / "data.npz")
    assert summary.validation == from_npz
