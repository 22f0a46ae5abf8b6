// Integer-mode convolution: activations quantized per tensor to u8, weights as exact integer levels, int32
// accumulation, one float rescale per output:
//   y[n, m, ...] = epilogue(float(acc - zp * rowsum[m]) * (unit[m] * x_scale))
// with acc = sum q(x) * level, rowsum[m] = sum of channel m's levels, epilogue = bias[m], summand (y's layout),
// Relu / Clip (kernels/epilogue.h), in that order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/epilogue.h"
#include "kernels/im2col.h"
#include "kernels/qpack.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"

namespace inq {

// Weights of one integer convolution, prepared once per session.
//
// Two paths: the implicit GEMM over u8 quads (qconv.cc) and, for depthwise and other convolutions with very few
// channels per group (where 8-row x 4-deep panels would mostly multiply padding), a direct path
// (qdepthwise.cc): the input held as exact float (q - zp) planes, each output channel's taps summed exactly
// (float sums of integers below 2^24), the same rescale. Both are bit-identical to the integer definition.
class QConvWeights {
 public:
  enum class Path { kAuto, kGemm, kDirect };
  // levels: (m, cg, kh, kw) row-major integers in [-128, 128] (INQ level / channel unit); unit: m floats.
  // `k` picks the kernel table (default: active_qkernels()); `path` forces a path (kDirect only where exact:
  // cg * kh * kw <= kMaxDirectTaps, else the GEMM). Returns "" or an error message.
  std::string prepare(int64_t m, int64_t group, int64_t cg, int64_t kh, int64_t kw, const int16_t* levels,
                      const float* unit, const QKernels* k = nullptr, Path path = Path::kAuto);
  // Extra weight rows added for channels holding both +128 and -128 (GEMM path).
  int64_t correction_rows() const { return packed_.correction_rows(); }
  const QPackedWeights& packed() const { return packed_; }
  const QKernels& kernels() const { return *k_; }
  const char* isa() const { return k_->name; }
  const ScratchPool& pool() const { return direct_ ? *pool_ : packed_.pool(); }

  // Direct path: taps per output channel at most this, so that taps * 255 * 128 < 2^24.
  static constexpr int64_t kMaxDirectTaps = 514;
  bool direct() const { return direct_; }
  int64_t taps() const { return taps_; }  // cg * kh * kw
  // Output channel ch's nonzero taps: indices into (c, ki, kj) order and their levels.
  int64_t nonzero_begin(int64_t ch) const { return nz_start_[static_cast<size_t>(ch)]; }
  int64_t nonzero_end(int64_t ch) const { return nz_start_[static_cast<size_t>(ch) + 1]; }
  const int32_t* nonzero_tap() const { return nz_tap_.data(); }
  const float* nonzero_level() const { return nz_level_.data(); }
  float unit(int64_t ch) const { return unit_[static_cast<size_t>(ch)]; }

 private:
  QPackedWeights packed_;
  const QKernels* k_ = nullptr;
  bool direct_ = false;
  int64_t taps_ = 0;
  std::vector<int64_t> nz_start_;
  std::vector<int32_t> nz_tap_;
  std::vector<float> nz_level_, unit_;
  std::unique_ptr<ScratchPool> pool_;
};

// y (n, m, oh, ow) float NCHW from x (n, c, h, w) float NCHW. xq.scale <= 0: dynamic parameters from x.
// Assumes validated inputs (geometry from conv_output_shape, weights prepared for the same m, group, kernel).
void qconv_forward(const ConvGeometry& g, const QConvWeights& w, const float* x, QuantParams xq, const Epilogue& ep,
                   float* y, const TaskRunner& runner);

// The operands of an integer convolution when its input, summand or output may be uint8 tensors (kept 8-bit
// between integer layers). Exactly one of x / x_u8 and one of y / y_u8 is set.
//  - x_u8: the input's codes with static parameters xq (scale > 0): copied into the padded layout as they are,
//    no quantization; the result equals qconv_forward on any float x that quantizes to these codes.
//  - z_u8: a summand of y's shape, dequantized as float(z - zq.zero_point) * zq.scale (ep.summand must be null).
//  - y_u8: the epilogue's float v stored as saturate_u8(round_half_even(v / yq.scale) + yq.zero_point) with the
//    float operations of quantize_one.
struct QConvOperands {
  const float* x = nullptr;
  const uint8_t* x_u8 = nullptr;
  QuantParams xq;
  const uint8_t* z_u8 = nullptr;
  QuantParams zq;
  float* y = nullptr;
  uint8_t* y_u8 = nullptr;
  QuantParams yq;
};
void qconv_run(const ConvGeometry& g, const QConvWeights& w, const QConvOperands& io, const Epilogue& ep,
               const TaskRunner& runner);

// The direct path (w.direct()) with resolved (static) input parameters io.xq; called by qconv_run.
void qconv_direct(const ConvGeometry& g, const QConvWeights& w, const QConvOperands& io, const Epilogue& ep,
                  const TaskRunner& runner);

}  // namespace inq
