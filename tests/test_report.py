"""The HTML report of `quantize --report`: the page, its plots, escaped text, and its failures."""

import re
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inq_onnx.api import quantize
from inq_onnx.cli.main import cli
from inq_onnx.errors import ConfigError, RuntimeUnavailableError
from inq_onnx.pipeline import QuantizeConfig
from inq_onnx.quantizer import LayerLevels
from inq_onnx.report._measure import level_values
from inq_onnx.retrain import RetrainConfig

from models import conv_gemm_model, random_inputs

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = ("conv1", "conv_dw", "fc")


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


@pytest.fixture
def files(tmp_path):
    onnx.save(conv_gemm_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=random_inputs(0, 40), labels=np.random.default_rng(0).integers(0, 5, 40))
    return tmp_path


def images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def check_page(directory) -> str:
    """The page exists and every image it shows is a PNG beside it; returns the page."""
    page = (directory / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page  # readable offline: nothing fetched
    shown = images(page)
    assert len(shown) == len(set(shown))
    for name in shown:
        data = (directory / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name  # a drawn figure, not an empty canvas
    return page


@pytest.mark.train
def test_retrained_report_has_steps_histograms_sqnr_and_comparison(files, matplotlib):
    out = files / "report"
    result = CliRunner().invoke(cli, ["quantize", str(files / "model.onnx"), "--data", str(files / "data.npz"),
                                      "--bits", "4", "--epochs", "1", "--portions", "0.5,0.75,1", "--quiet",
                                      "--report", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Wrote the report {out / 'index.html'}" in result.output
    page = check_page(out)
    assert sorted(images(page)) == ["sqnr.png", "training.png"] + [f"weights_{i:03d}.png" for i in range(3)]
    assert all(f">{name}<" in page for name in LAYERS)  # per-layer table rows
    assert "FP32 (original)" in page and "INQ 4-bit" in page and "measured on this machine" in page
    # One accuracy per INQ step, after each, in the table under the plot.
    steps = re.findall(r'<tr><td class="num">(\d)</td><td>([\d.]+%)</td>.*?<td>([\d.]+%)</td></tr>', page)
    assert [(s, p) for s, p, _ in steps] == [("1", "50%"), ("2", "75%"), ("3", "100%")]


@pytest.mark.train
def test_step_scores_are_accuracies_on_the_data(files, matplotlib):
    config = QuantizeConfig(bits=4, portions=(0.5, 1.0), training=RetrainConfig(epochs=1))
    summary = quantize(files / "model.onnx", config, files / "data.npz", files / "q.onnx", report_dir=files / "r")
    scores = [s.accuracy for s in summary.result.steps]
    assert all(0.0 <= s <= 1.0 for s in scores) and len(scores) == 2
    # The last step's model is the final one: its score is the validation accuracy on the same data.
    assert scores[-1] == pytest.approx(summary.validation.accuracy_quantized)
    assert summary.report == files / "r" / "index.html"


@pytest.mark.train
def test_report_under_accuracy_control_scores_the_steps_of_the_run_kept(files, matplotlib):
    config = QuantizeConfig(bits=4, portions=(0.5, 1.0), training=RetrainConfig(epochs=1))
    summary = quantize(files / "model.onnx", config, files / "data.npz", files / "q.onnx", report_dir=files / "r",
                       val_data_path=files / "data.npz", max_drop=100.0)
    assert summary.control is not None and summary.control.met
    scores = [s.accuracy for s in summary.result.steps]
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[-1] == pytest.approx(summary.validation.accuracy_quantized)


def test_one_shot_report_without_data(files, matplotlib):
    summary = quantize(files / "model.onnx", QuantizeConfig(bits=3, retrain=False), None, files / "q.onnx",
                       report_dir=files / "r")
    page = check_page(files / "r")
    assert "training.png" not in images(page) and "One-shot quantization" in page
    assert "accuracy not measured: no --data" in page.lower()
    assert sorted(p.name for p in summary.report.parent.glob("weights_*.png")) == [f"weights_{i:03d}.png"
                                                                                    for i in range(3)]
    # Random inputs fit this model's shapes: the layer outputs and latency are measured anyway.
    sqnr = [row for row in summary_rows(page) if row and row[0] in LAYERS]
    assert len(sqnr) == 3 and all(re.fullmatch(r"-?[\d.]+|inf", row[-1]) for row in sqnr), sqnr
    assert "median of" in page


def summary_rows(page: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]


def test_names_from_the_model_are_escaped(files, matplotlib):
    model = conv_gemm_model()
    model.graph.node[0].name = '<script>alert("x")</script>&conv'
    onnx.save(model, files / "odd.onnx")
    quantize(files / "odd.onnx", QuantizeConfig(bits=4, retrain=False), None, files / "q.onnx",
             report_dir=files / "r")
    page = check_page(files / "r")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;conv" in page


def test_report_dir_that_is_a_file_fails_before_anything_is_written(files):
    (files / "taken").write_text("")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        quantize(files / "model.onnx", QuantizeConfig(retrain=False), None, files / "q.onnx",
                 report_dir=files / "taken")
    assert not (files / "q.onnx").exists()


def test_missing_matplotlib_is_a_one_line_error_and_writes_nothing(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'inq-onnx\[report\]'"):
        quantize(files / "model.onnx", QuantizeConfig(retrain=False), None, files / "q.onnx", report_dir=files / "r")
    assert not (files / "q.onnx").exists() and not (files / "r").exists()


def test_levels_marked_are_the_union_over_channels():
    per_channel = LayerLevels(bits=3, n1=(0, -1), n2=(-1, -2), channel_axis=0)
    assert level_values(per_channel).tolist() == [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
    assert level_values(LayerLevels(bits=2, n1=-3, n2=-3)).tolist() == [-0.125, 0.0, 0.125]


def test_without_inputs_the_report_says_what_it_could_not_measure(files, matplotlib):
    model = conv_gemm_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"  # no random inputs can be made for this shape
    onnx.save(model, files / "symbolic.onnx")
    with pytest.warns(UserWarning, match="the rewrite was not checked"):
        summary = quantize(files / "symbolic.onnx", QuantizeConfig(bits=4, retrain=False), None, files / "q.onnx",
                           report_dir=files / "r")
    page = check_page(files / "r")
    assert "Latency not measured" in page and "layer outputs need inputs" in page
    rows = [row for row in summary_rows(page) if row and row[0] in LAYERS]
    assert len(rows) == 3 and all(row[-1] == "-" and row[-2] != "-" for row in rows)  # weights only
    assert summary.report is not None
