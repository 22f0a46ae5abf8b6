"""Layers left float are reported by reason, with counts and the first names: in the library, `info` and errors."""

import numpy as np
import pytest
from click.testing import CliRunner
import onnx
from onnx import TensorProto, helper

from inq_onnx.cli.main import cli
from inq_onnx.errors import ModelError
from inq_onnx.layers import SkippedNode
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.refusals import ReasonGroup, group_reasons, summarize_reasons

from models import make_model, weights


def test_groups_count_by_op_and_reason_largest_first_in_graph_order():
    skipped = [SkippedNode(f"n{i}", "Conv", "weight is not constant (computed by Abs)") for i in range(0, 96, 2)]
    skipped.insert(3, SkippedNode("fc", "Gemm", "excluded by the user"))
    groups = group_reasons(skipped)
    assert groups == [ReasonGroup("Conv", "weight is not constant (computed by Abs)",
                                  tuple(f"n{i}" for i in range(0, 96, 2))),
                      ReasonGroup("Gemm", "excluded by the user", ("fc",))]
    assert groups[0].summary() == "48 Conv nodes: weight is not constant (computed by Abs): n0, n2, n4 ... (45 more)"
    assert groups[1].summary() == "1 Gemm node: excluded by the user: fc"


def test_summary_line_stays_short_with_many_reasons():
    skipped = [SkippedNode(f"node_{i}", "Conv", f"weight also feeds node consumer_with_a_long_name_{i} (Add)")
               for i in range(40)]
    line = summarize_reasons(group_reasons(skipped))
    assert len(line) < 400 and line.endswith("more reason(s))")
    assert line.startswith("1 Conv node: weight also feeds node consumer_with_a_long_name_0 (Add): node_0; ")


def many_refused_convs(count: int = 48) -> onnx.ModelProto:
    """`count` Conv nodes whose weight is computed at run time (Abs of a graph input), and two 3-D convolutions."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Abs", ["w_in"], ["w"], name="abs")]
    nodes += [helper.make_node("Conv", ["x", "w"], [f"y{i}"], name=f"c{i}") for i in range(count)]
    nodes += [helper.make_node("Conv", ["v", "w3d"], [f"z{i}"], name=f"d{i}") for i in range(2)]
    return make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
                helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [3, 2, 3, 3]),
                helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2, 4, 4, 4])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 3, 3, 3]) for i in range(count)] +
        [helper.make_tensor_value_info(f"z{i}", TensorProto.FLOAT, [1, 3, 3, 3, 3]) for i in range(2)],
        {"w3d": weights(rng, 3, 2, 2, 2, 2)})


def test_nothing_to_quantize_is_one_short_line_grouped_by_reason():
    with pytest.raises(ModelError) as caught:
        quantize_model(many_refused_convs(), QuantizeConfig(retrain=False))
    message = str(caught.value)
    assert message == ("nothing to quantize: 48 Conv nodes: weight is not constant (computed by Abs): c0, c1 ... "
                       "(46 more); 2 Conv nodes: only 1-D and 2-D convolutions are supported (weight rank 5): d0, d1")


def test_cli_info_and_quantize_group_the_refusals(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(many_refused_convs(), path)
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "  48 Conv nodes: weight is not constant (computed by Abs): c0, c1, c2 ... (45 more)" in result.output
    assert "  2 Conv nodes: only 1-D and 2-D convolutions are supported (weight rank 5): d0, d1" in result.output
    assert max(len(line) for line in result.output.splitlines()) < 200
    result = CliRunner().invoke(cli, ["quantize", str(path), "--no-retrain", "--quiet"])
    assert result.exit_code == 1
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert error.startswith("Error: nothing to quantize: 48 Conv nodes") and len(error) < 300
    assert not (tmp_path / "m.inq.onnx").exists()


def test_cli_info_prints_what_normalizing_changed(tmp_path):
    from models import constant_subgraph_model

    path = tmp_path / "old.onnx"
    onnx.save(constant_subgraph_model(), path)
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "Normalized: converted from opset 9 to opset 17" in result.output
    assert "Normalized: folded 10 constant node(s)" in result.output
    assert result.output.count("quantizable, not quantized") == 3 and "Left float" not in result.output
