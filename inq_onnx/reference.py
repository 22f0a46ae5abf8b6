"""Numpy reference of the com.inq operators for onnx.reference.ReferenceEvaluator (a third opinion in tests)."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_conv import Conv
from onnx.reference.ops.op_gemm import Gemm_7

from . import packing
from .schemas import DOMAIN

__all__ = ["ShiftConv", "ShiftGemm", "ShiftMatMul", "REFERENCE_OPS"]


def _activate(y: np.ndarray, activation, activation_params) -> np.ndarray:
    if activation == "Relu":
        return np.maximum(y, 0).astype(y.dtype)
    if activation == "Clip":
        low, high = activation_params
        return np.clip(y, low, high).astype(y.dtype)
    return y


def _quantized_input(x: np.ndarray, quantize_input, x_scale, x_zero_point) -> np.ndarray:
    """Integer mode: x as its uint8 codes represent it (QuantizeLinear then DequantizeLinear)."""
    if quantize_input in (None, "", b""):
        return x
    if x_scale is None:  # dynamic: onnxruntime's DynamicQuantizeLinear rule
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        x_scale = np.float32((high - low) / 255.0) or np.float32(1.0)
        x_zero_point = int(np.clip(np.rint(-low / x_scale), 0, 255))
    scale = np.float32(x_scale)
    q = np.clip(np.rint(x / scale) + (x_zero_point or 0), 0, 255)
    return ((q - (x_zero_point or 0)) * scale).astype(x.dtype)


def _decode(packed, bits, weight_shape, exponent_base, channel_axis) -> np.ndarray:
    return packing.unpack_weight(packed, int(bits), list(exponent_base), tuple(weight_shape), channel_axis)


def _dequantized(q: np.ndarray, scale, zero_point) -> np.ndarray:
    """uint8 codes as the float values they stand for: (q - zero_point) * scale."""
    return ((q.astype(np.int32) - int(zero_point or 0)).astype(np.float32) * np.float32(scale)).astype(np.float32)


def _max_pool(y: np.ndarray, kernel, strides, pads) -> np.ndarray:
    """2-D MaxPool (floor mode, padding ignored) of an NCHW tensor."""
    kh, kw = kernel
    sh, sw = strides or (1, 1)
    pt, pl, pb, pr = pads or (0, 0, 0, 0)
    n, c, h, w = y.shape
    padded = np.full((n, c, h + pt + pb, w + pl + pr), -np.inf, dtype=y.dtype)
    padded[:, :, pt:pt + h, pl:pl + w] = y
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    windows = [padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
               for i in range(kh) for j in range(kw)]
    return np.max(np.stack(windows), axis=0)


class ShiftConv(OpRun):
    op_domain = DOMAIN

    def _run(self, X, W_packed, B=None, Z=None, Y_zero_point=None, auto_pad=None, dilations=None, group=None,
             kernel_shape=None, pads=None, strides=None, bits=None, weight_shape=None, exponent_base=None,
             activation=None, activation_params=None, quantize_input=None, x_scale=None, x_zero_point=None,
             y_scale=None, z_scale=None, z_zero_point=None, pool_kernel_shape=None, pool_strides=None,
             pool_pads=None):
        weight = _decode(W_packed, bits, weight_shape, exponent_base, 0)
        if X.dtype == np.uint8:  # integer mode: codes described by x_scale / x_zero_point
            X = _dequantized(X, x_scale, x_zero_point)
        else:
            X = _quantized_input(X, quantize_input, x_scale, x_zero_point)
        (y,) = Conv._run(self, X, weight, B, auto_pad=auto_pad or "NOTSET", dilations=dilations, group=group or 1,
                         kernel_shape=kernel_shape, pads=pads, strides=strides)
        y = y.astype(np.float32)
        if Z is not None:
            z = _dequantized(Z, z_scale, z_zero_point) if Z.dtype == np.uint8 else Z
            y = (y + z).astype(y.dtype)
        y = _activate(y, activation, activation_params)
        if pool_kernel_shape is not None:
            y = _max_pool(y, pool_kernel_shape, pool_strides, pool_pads)
        if Y_zero_point is not None:  # uint8 output: QuantizeLinear with y_scale and Y_zero_point
            zp = int(np.asarray(Y_zero_point).reshape(-1)[0])
            y = np.clip(np.rint(y / np.float32(y_scale)) + zp, 0, 255).astype(np.uint8)
        return (y,)


class ShiftGemm(OpRun):
    op_domain = DOMAIN

    def _run(self, A, B_packed, C=None, alpha=None, beta=None, transA=None, transB=None, bits=None,
             weight_shape=None, exponent_base=None, activation=None, activation_params=None, quantize_input=None,
             x_scale=None, x_zero_point=None):
        weight = _decode(B_packed, bits, weight_shape, exponent_base, 0 if transB else 1)
        A = _quantized_input(A, quantize_input, x_scale, x_zero_point)
        alpha = 1.0 if alpha is None else alpha
        beta = 1.0 if beta is None else beta
        (y,) = Gemm_7._run(self, A, weight, C, alpha=alpha, beta=beta, transA=transA or 0, transB=transB or 0)
        return (_activate(y, activation, activation_params),)


class ShiftMatMul(OpRun):
    op_domain = DOMAIN

    def _run(self, A, B_packed, Bias=None, bits=None, weight_shape=None, exponent_base=None, activation=None,
             activation_params=None, quantize_input=None, x_scale=None, x_zero_point=None):
        weight = _decode(B_packed, bits, weight_shape, exponent_base, 1)
        A = _quantized_input(A, quantize_input, x_scale, x_zero_point)
        y = np.matmul(A, weight).astype(np.float32)
        if Bias is not None:
            y = (y + Bias).astype(np.float32)
        return (_activate(y, activation, activation_params),)


REFERENCE_OPS = [ShiftConv, ShiftGemm, ShiftMatMul]
