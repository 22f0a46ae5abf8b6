// Integer-mode convolution: activations quantized per tensor to u8, weights as exact integer levels, int32
// accumulation, one float rescale per output:
//   y[n, m, ...] = epilogue(float(acc - zp * rowsum[m]) * (unit[m] * x_scale))
// with acc = sum q(x) * level, rowsum[m] = sum of channel m's levels, epilogue = bias[m], summand (y's layout),
// Relu / Clip (kernels/epilogue.h), in that order.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/epilogue.h"
#include "kernels/im2col.h"
#include "kernels/qpack.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"

namespace inq {

// Weights of one integer convolution, prepared once per session.
class QConvWeights {
 public:
  // levels: (m, cg, kh, kw) row-major integers in [-128, 128] (INQ level / channel unit); unit: m floats.
  // `k` picks the kernel table (default: active_qkernels()). Returns "" or an error message.
  std::string prepare(int64_t m, int64_t group, int64_t cg, int64_t kh, int64_t kw, const int16_t* levels,
                      const float* unit, const QKernels* k = nullptr);
  // Extra weight rows added for channels holding both +128 and -128.
  int64_t correction_rows() const { return packed_.correction_rows(); }
  const QPackedWeights& packed() const { return packed_; }
  const char* isa() const { return packed_.kernels().name; }

 private:
  QPackedWeights packed_;
};

// y (n, m, oh, ow) float NCHW from x (n, c, h, w) float NCHW. xq.scale <= 0: dynamic parameters from x.
// Assumes validated inputs (geometry from conv_output_shape, weights prepared for the same m, group, kernel).
void qconv_forward(const ConvGeometry& g, const QConvWeights& w, const float* x, QuantParams xq, const Epilogue& ep,
                   float* y, const TaskRunner& runner);

}  // namespace inq
