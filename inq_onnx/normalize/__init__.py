"""Normalize: a checked copy of the model in one opset, weights computed by constant subgraphs folded into
initializers, shapes inferred and every node named; the passes' notes say what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import onnx

from .. import large_models
from ._constants import MAX_FOLDED_BYTES, fold_constants
from ._opset import MAX_OPSET, TARGET_OPSET, convert_opset
from ._structure import check_input_dims, check_layers, check_model, check_tensors, check_text, drop_identities, \
    drop_initializer_inputs, fill_output_shapes, infer_shapes, name_nodes

__all__ = ["normalize", "normalize_model", "Normalized", "PASSES", "TARGET_OPSET", "MAX_OPSET", "MAX_FOLDED_BYTES"]

Pass = Callable[[onnx.ModelProto], "tuple[onnx.ModelProto, list[str]]"]


@dataclass
class Normalized:
    model: onnx.ModelProto
    notes: list[str] = field(default_factory=list)  # what the passes changed, for the reports


def _in_place(change: Callable[[onnx.ModelProto], list[str]]) -> Pass:
    return lambda model: (model, change(model))


def _shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    return infer_shapes(model), []


# In order: the checker sees the model as written; conversion runs before folding so the evaluator reads one
# opset; shapes are inferred on the folded graph, whose weights then have their dims.
PASSES: tuple[tuple[str, Pass], ...] = (
    ("output shapes", _in_place(fill_output_shapes)),
    ("checker", _in_place(check_model)),
    ("text", _in_place(check_text)),
    ("tensors", _in_place(check_tensors)),
    ("dims", _in_place(check_input_dims)),
    ("node names", _in_place(name_nodes)),
    ("opset", convert_opset),
    ("initializer inputs", _in_place(drop_initializer_inputs)),
    ("constant folding", _in_place(fold_constants)),
    ("identities", _in_place(drop_identities)),
    ("shapes", _shapes),
    ("layer attributes", _in_place(check_layers)),
)


def normalize(model: onnx.ModelProto) -> Normalized:
    """Run PASSES on a copy; the caller's model is left as it is. ModelError when the model is malformed.

    The copy goes through the passes with its large tensors held aside (the checker, shape inference and the
    version converter serialize the model, and none needs the weights' values; constant folding reads them
    from where they are held), after their stored bytes were checked against their dims: so that a model
    past protobuf's 2 GB passes at all, and any model without its weights copied over and over.
    """
    check_tensors(model)
    model, held = large_models.held_copy(model)
    notes: list[str] = []
    if sum(map(len, held.values())) >= large_models.LARGE_MODEL_BYTES:
        notes.append(f"{len(held)} tensor(s) of {sum(map(len, held.values())) / 1e9:.1f} GB held aside while the "
                     "graph was checked and converted (the model is past protobuf's 2 GB)")
    for name, run in PASSES:
        if name == "constant folding":
            run = _in_place(lambda m: fold_constants(m, held))
        model, changed = run(model)
        notes.extend(changed)
    large_models.restore_tensors(model, held)
    return Normalized(model, notes)


def normalize_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The normalized copy alone."""
    return normalize(model).model
