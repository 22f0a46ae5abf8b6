// Integer-mode Gemm: y (M x N) = epilogue(alpha * A' * B') with A' (M x K) float activations quantized per
// tensor to u8, B' (K x N) exact integer weight levels with one unit per column N:
//   y[i, j] = epilogue(float(acc[i, j] - zp * rowsum[j]) * ((unit[j] * alpha) * a_scale))
// acc = sum_k q(A'[i, k]) * level[k, j]. Epilogue: bias[j] (one value per column N, i.e. a Gemm C of shape (N)
// or (1, N)), summand (M x N, y's layout: any other C, expanded by the caller), then Relu / Clip.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/epilogue.h"
#include "kernels/qpack.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"

namespace inq {

class QGemmWeights {
 public:
  // levels: B as (k x n) row-major, or (n x k) if trans_b, integers in [-128, 128]; unit: n floats. The
  // stored unit is unit[j] * alpha (one float product). `kern` picks the kernel table (default: active).
  std::string prepare(int64_t k, int64_t n, bool trans_b, const int16_t* levels, const float* unit, float alpha,
                      const QKernels* kern = nullptr);
  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  int64_t correction_rows() const { return packed_.correction_rows(); }
  const QPackedWeights& packed() const { return packed_; }

 private:
  int64_t k_ = 0, n_ = 0;
  QPackedWeights packed_;
};

// a: (m x k) row-major, or (k x m) if trans_a. aq.scale <= 0: dynamic parameters from a. y: (m x n).
void qgemm_forward(const QGemmWeights& w, int64_t m, bool trans_a, const float* a, QuantParams aq,
                   const Epilogue& ep, float* y, const TaskRunner& runner);

}  // namespace inq
