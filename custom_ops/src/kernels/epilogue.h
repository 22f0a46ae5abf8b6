// What a convolution or GEMM does to its accumulators before storing them: bias, a summand (the residual Add
// fused into the op) and an activation (Relu / Clip), in that order, as onnxruntime's FusedConv does.
#pragma once

#include <algorithm>
#include <cstdint>

namespace inq {

enum class Activation { kNone, kRelu, kClip };

struct Epilogue {
  const float* bias = nullptr;     // one value per output channel, or null
  const float* summand = nullptr;  // same shape and layout as the output, or null
  Activation activation = Activation::kNone;
  float clip_min = 0.0f, clip_max = 0.0f;  // kClip only

  bool any() const { return bias || summand || activation != Activation::kNone; }
  float lower() const {
    if (activation == Activation::kNone) return -__builtin_inff();
    return activation == Activation::kRelu ? 0.0f : clip_min;
  }
  float upper() const { return activation == Activation::kClip ? clip_max : __builtin_inff(); }

  // y = activation(v + bias[channel] + summand[index]) for one element (the scalar reference of the fused ops).
  float apply(float v, int64_t channel, int64_t index) const {
    if (bias) v += bias[channel];
    if (summand) v += summand[index];
    return activation == Activation::kNone ? v : std::min(std::max(v, lower()), upper());
  }
};

// dst rows = activation(src rows + summand rows) for `rows` x `cols` elements (bias is not added here: the GEMM
// adds it). src may equal dst; summand may be null.
void finish_rows(const Epilogue& ep, const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows,
                 int64_t cols, const float* summand, int64_t ldz);

}  // namespace inq
