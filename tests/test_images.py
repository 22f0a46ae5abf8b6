"""Data beyond .npz: image folders with preprocessing, and input dicts from Python (iterables and readers)."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

from inq_onnx.api import convert, quantize
from inq_onnx.calibrate import activation_ranges
from inq_onnx.data import check_dataset, load_data
from inq_onnx.errors import ConfigError, DataError
from inq_onnx.images import Preprocess
from inq_onnx.pipeline import QuantizeConfig
from inq_onnx.retrain import RetrainConfig

from models import make_model, weights

SIZE = 8


def image_model(channels=3, classes=2, layout="nchw", seed=0):
    """Conv 3x3 → Relu → GlobalAveragePool → Flatten → Gemm on (N, C, 8, 8) (or NHWC, transposed first)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["xc", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], name="fc", transB=1)]
    shape = ["N", channels, SIZE, SIZE]
    if layout == "nhwc":
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["xc"], name="to_nchw", perm=[0, 3, 1, 2]))
        shape = ["N", SIZE, SIZE, channels]
    else:
        nodes[0].input[0] = "x"
    init = {"w1": weights(rng, 6, channels, 3, 3), "b1": weights(rng, 6, scale=0.1),
            "w2": weights(rng, classes, 6), "b2": weights(rng, classes, scale=0.1)}
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], init)


def pixels(seed, height=SIZE, width=SIZE, mode="RGB"):
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_folder(root, classes=("cat", "dog"), per_class=3, size=(SIZE, SIZE)):
    """PNGs in one sub-folder per class (or loose in `root` when classes is empty); returns the pixel arrays."""
    written = []
    for c, name in enumerate(classes or [None]):
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = pixels(10 * c + i, *size)
            Image.fromarray(array).save(folder / f"img{i}.png")
            written.append(array)
    return written


# -- preprocessing, against numpy ---------------------------------------------------------------------------------

@pytest.mark.parametrize("channels, layout", [("rgb", "nchw"), ("bgr", "nchw"), ("rgb", "nhwc"), ("bgr", "nhwc")])
def test_crop_scale_mean_std_channels_layout_match_numpy(channels, layout):
    raw = pixels(0, 10, 12)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = Preprocess(crop=(6, 8), mean=mean, std=std, channels=channels, layout=layout)(Image.fromarray(raw))
    expected = raw[2:8, 2:10].astype(np.float64) / 255  # the center: (10-6)/2 rows, (12-8)/2 columns off
    if channels == "bgr":
        expected = expected[:, :, ::-1]
    expected = (expected - np.array(mean)) / np.array(std)
    if layout == "nchw":
        expected = expected.transpose(2, 0, 1)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_gray_images_and_a_raw_pixel_scale():
    raw = pixels(1, mode="L")
    got = Preprocess(scale=1.0, mean=(128,), std=(64,), channels="gray")(Image.fromarray(raw))
    np.testing.assert_allclose(got, ((raw.astype(np.float64) - 128) / 64)[None], rtol=0, atol=1e-6)


def test_resize_keeps_the_aspect_or_takes_an_exact_size():
    wide = Image.fromarray(np.full((20, 40, 3), 200, np.uint8))  # height 20, width 40
    shorter = Preprocess(resize=10)(wide)
    assert shorter.shape == (3, 10, 20)
    np.testing.assert_allclose(shorter, 200 / 255, rtol=0, atol=1e-6)  # a flat image stays flat
    assert Preprocess(resize=(7, 9), layout="nhwc")(wide).shape == (7, 9, 3)
    assert Preprocess(resize=16, crop=8)(wide).shape == (3, 8, 8)
    reference = np.asarray(Image.fromarray(pixels(2, 20, 40)).resize((20, 10), Image.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(Preprocess(resize=10, layout="nhwc")(Image.fromarray(pixels(2, 20, 40))), reference,
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"resize": 0}, r"resize \(--resize\) must be one whole number >= 1"),
    ({"crop": (1, 2, 3)}, r"crop \(--crop\) must be one whole number >= 1 or height,width"),
    ({"mean": (0.1, 0.2)}, r"mean \(--mean\) needs 1 or 3 finite values for rgb images"),
    ({"std": (0.0,)}, r"std \(--std\) values must be > 0"),
    ({"channels": "rgba"}, r"channels \(--channels\) must be one of rgb, bgr, gray"),
    ({"layout": "chw"}, r"layout \(--layout\) must be one of nchw, nhwc"),
    ({"scale": float("nan")}, r"scale \(--scale\) must be a finite number > 0"),
])
def test_bad_preprocessing_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Preprocess(**kwargs)


# -- image folders ----------------------------------------------------------------------------------------------

def test_labels_come_from_sorted_sub_folders(tmp_path):
    written = write_folder(tmp_path / "train", classes=("b_dog", "a_cat"), per_class=2)
    dataset = check_dataset(load_data(tmp_path / "train", image_model()), image_model())
    # a_cat sorts first: class 0 holds the images written second
    assert dataset.labels.tolist() == [0, 0, 1, 1]
    expected = np.stack(written[2:] + written[:2]).transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(dataset.inputs["x"], expected, rtol=0, atol=1e-6)


def test_an_unlabeled_folder_and_nhwc_models(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image: ignored")
    write_folder(tmp_path, classes=(), per_class=3)
    model = image_model(layout="nhwc")
    dataset = check_dataset(load_data(tmp_path, model, Preprocess(layout="nhwc")), model)
    assert dataset.labels is None and dataset.inputs["x"].shape == (3, SIZE, SIZE, 3)


def test_image_folder_errors(tmp_path):
    model = image_model()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no images .* and no class sub-folders"):
        load_data(tmp_path / "empty", model)
    write_folder(tmp_path / "hollow", classes=("a",), per_class=1)
    (tmp_path / "hollow" / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*hollow/b has no images"):
        load_data(tmp_path / "hollow", model)
    write_folder(tmp_path / "mixed", classes=("a",), per_class=1)
    Image.fromarray(pixels(0)).save(tmp_path / "mixed" / "loose.png")
    with pytest.raises(DataError, match="holds both images and sub-folders"):
        load_data(tmp_path / "mixed", model)
    write_folder(tmp_path / "bad", classes=(), per_class=1)
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot decode image .*broken.png"):
        load_data(tmp_path / "bad", model)
    write_folder(tmp_path / "sizes", classes=(), per_class=1)
    Image.fromarray(pixels(0, 9, 8)).save(tmp_path / "sizes" / "tall.png")
    with pytest.raises(DataError, match=r"images come out in different shapes: .* \(3, 8, 8\), .*tall.png "
                                        r"\(3, 9, 8\); give --resize and --crop"):
        load_data(tmp_path / "sizes", model)
    write_folder(tmp_path / "ok", classes=(), per_class=1)
    with pytest.raises(DataError, match=r"--crop 16x16 is larger than the 8x8 image"):
        load_data(tmp_path / "ok", model, Preprocess(crop=16))
    two_inputs = image_model()
    two_inputs.graph.input.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]))
    with pytest.raises(DataError, match="an image folder feeds a model with one input; this one has 2"):
        load_data(tmp_path / "ok", two_inputs)
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 3, SIZE, SIZE), np.float32))
    with pytest.raises(ConfigError, match="apply to an image folder"):
        load_data(tmp_path / "data.npz", model, Preprocess(crop=4))


def test_images_of_another_size_than_the_model_takes(tmp_path):
    write_folder(tmp_path, classes=(), per_class=2, size=(12, 12))
    with pytest.raises(DataError, match="the model needs 8 on axis 2"):
        check_dataset(load_data(tmp_path, image_model()), image_model())
    assert check_dataset(load_data(tmp_path, image_model(), Preprocess(crop=8)), image_model()).inputs["x"].shape \
        == (2, 3, 8, 8)


# -- input dicts from Python ------------------------------------------------------------------------------------

class Reader:
    """onnxruntime's CalibrationDataReader convention: get_next() returns a feed dict, then None."""

    def __init__(self, batches):
        self.batches = iter(batches)
        self.pulled = 0

    def get_next(self):
        batch = next(self.batches, None)
        self.pulled += batch is not None
        return batch


def _batches(count=10, size=4):
    rng = np.random.default_rng(3)
    return [{"x": rng.standard_normal((size, 3, SIZE, SIZE)).astype(np.float32),
             "labels": rng.integers(0, 2, size)} for _ in range(count)]


@pytest.mark.parametrize("wrap", [list, iter, Reader])
def test_input_dicts_concatenate_into_a_dataset(wrap):
    batches = _batches(3)
    dataset = load_data(wrap(batches), image_model())
    np.testing.assert_array_equal(dataset.inputs["x"], np.concatenate([b["x"] for b in batches]))
    np.testing.assert_array_equal(dataset.labels, np.concatenate([b["labels"] for b in batches]))


@pytest.mark.parametrize("batches, message", [
    ([], "the data yielded no batches"),
    ([[1, 2]], "batch 0 of the data is list, not a dict"),
    ([{"x": np.zeros((2, 3, 8, 8))}, {"y": np.zeros((2, 3, 8, 8))}], r"batch 1 has arrays \['y'\]"),
    ([{"x": np.zeros((2, 3, 8, 8)), "labels": np.zeros(3, int)}], "batch 0: arrays differ in sample count"),
    ([{"x": np.zeros((2, 3, 8, 8))}, {"x": np.zeros((2, 3, 4, 4))}], "batches do not stack"),
    ([{"labels": np.zeros(3, int)}], "hold no input arrays"),
])
def test_bad_input_dicts(batches, message):
    with pytest.raises(DataError, match=message):
        load_data(iter(batches), image_model())


def test_calibration_streams_batches_with_the_same_ranges(tmp_path):
    model = image_model()
    batches = _batches(6)
    whole = np.concatenate([b["x"] for b in batches])
    reader = Reader([{"x": b["x"]} for b in batches])

    def pulled_one_at_a_time():
        while (batch := reader.get_next()) is not None:
            yield batch
            assert reader.pulled <= 6  # the reader is read as calibration goes, not up front

    assert activation_ranges(model, pulled_one_at_a_time(), batch_size=4) == activation_ranges(model, {"x": whole})


def test_quantize_and_convert_with_a_reader_match_the_npz(tmp_path):
    onnx.save(image_model(), tmp_path / "model.onnx")
    batches = _batches(4)
    np.savez(tmp_path / "data.npz", x=np.concatenate([b["x"] for b in batches]),
             labels=np.concatenate([b["labels"] for b in batches]))
    config = QuantizeConfig(bits=4, retrain=False, activations="int8")
    from_file = quantize(tmp_path / "model.onnx", config, tmp_path / "data.npz", tmp_path / "a.onnx")
    from_reader = quantize(tmp_path / "model.onnx", config, Reader(batches), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert from_reader.validation.accuracy_quantized == from_file.validation.accuracy_quantized
    convert(tmp_path / "a.onnx", tmp_path / "c.onnx", "int8", tmp_path / "data.npz")
    convert(tmp_path / "a.onnx", tmp_path / "d.onnx", "int8", iter(batches), batch_size=3)
    assert (tmp_path / "c.onnx").read_bytes() == (tmp_path / "d.onnx").read_bytes()


# -- the command line -------------------------------------------------------------------------------------------

def _cli(*args):
    from inq_onnx.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_quantize_validate_and_export_from_an_image_folder(tmp_path):
    onnx.save(image_model(), tmp_path / "model.onnx")
    write_folder(tmp_path / "images", per_class=3, size=(12, 10))
    options = ["--resize", 9, "--crop", 8, "--mean", "0.5,0.5,0.5", "--std", "0.25", "--channels", "bgr"]
    code, out = _cli("quantize", tmp_path / "model.onnx", "--data", tmp_path / "images", *options, "--no-retrain",
                     "--quiet")
    assert code == 0, out
    assert "Accuracy on --data: original" in out  # labels from the sub-folders
    code, out = _cli("validate", tmp_path / "model.onnx", tmp_path / "model.inq.onnx", "--data", tmp_path / "images",
                     *options, "--quiet")
    assert code == 0 and "6 samples" in out and "accuracy: original" in out, out
    code, out = _cli("export", tmp_path / "model.inq.onnx", "--format", "qdq", "--data", tmp_path / "images",
                     *options, "-o", tmp_path / "model.qdq.onnx")
    assert code == 0, out
    code, out = _cli("quantize", tmp_path / "model.onnx", "--data", tmp_path / "images", "--no-retrain", "--quiet")
    assert code != 0 and "Error: input x: data has shape (6, 3, 12, 10), the model needs 8 on axis 2" in out, out
    code, out = _cli("quantize", tmp_path / "model.onnx", "--data", tmp_path / "images", "--mean", "a,b",
                     "--no-retrain")
    assert code != 0 and "Error: --mean takes comma-separated numbers, got 'a,b'" in out, out


@pytest.mark.train
def test_retraining_on_an_image_folder_with_labels(tmp_path):
    onnx.save(image_model(), tmp_path / "model.onnx")
    write_folder(tmp_path / "images", per_class=8)
    config = QuantizeConfig(bits=4, training=RetrainConfig(epochs=1, batch_size=4))
    summary = quantize(tmp_path / "model.onnx", config, tmp_path / "images", tmp_path / "out.onnx")
    assert summary.result.mode == "labels" and len(summary.result.steps) > 1
    assert len(summary.result.dataset) == 16 and summary.result.dataset.sample_shapes() == {"x": (3, SIZE, SIZE)}
