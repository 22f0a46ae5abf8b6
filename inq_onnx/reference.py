"""Numpy reference of the com.inq operators for onnx.reference.ReferenceEvaluator (a third opinion in tests)."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_conv import Conv
from onnx.reference.ops.op_gemm import Gemm_7

from . import packing
from .schemas import DOMAIN

__all__ = ["ShiftConv", "ShiftGemm", "REFERENCE_OPS"]


def _decode(packed, bits, weight_shape, exponent_base, channel_axis) -> np.ndarray:
    return packing.unpack_weight(packed, int(bits), list(exponent_base), tuple(weight_shape), channel_axis)


class ShiftConv(OpRun):
    op_domain = DOMAIN

    def _run(self, X, W_packed, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             pads=None, strides=None, bits=None, weight_shape=None, exponent_base=None):
        weight = _decode(W_packed, bits, weight_shape, exponent_base, 0)
        return Conv._run(self, X, weight, B, auto_pad=auto_pad or "NOTSET", dilations=dilations, group=group or 1,
                         kernel_shape=kernel_shape, pads=pads, strides=strides)


class ShiftGemm(OpRun):
    op_domain = DOMAIN

    def _run(self, A, B_packed, C=None, alpha=None, beta=None, transA=None, transB=None, bits=None,
             weight_shape=None, exponent_base=None):
        weight = _decode(B_packed, bits, weight_shape, exponent_base, 0 if transB else 1)
        alpha = 1.0 if alpha is None else alpha
        beta = 1.0 if beta is None else beta
        return Gemm_7._run(self, A, weight, C, alpha=alpha, beta=beta, transA=transA or 0, transB=transB or 0)


REFERENCE_OPS = [ShiftConv, ShiftGemm]
