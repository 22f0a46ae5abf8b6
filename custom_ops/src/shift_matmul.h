// com.inq ShiftMatMul: ONNX MatMul of an N-D input by a bit-packed power-of-two 2-D weight (docs/ops.md).
#pragma once

#include "ort_util.h"
#include "shift_gemm.h"

namespace inq {

// Y = A * decode(B_packed) + Bias for A of shape (..., K): the leading axes of A are rows of one GEMM, run by
// ShiftGemm's weights and kernels (transA = transB = 0, alpha = beta = 1).
class ShiftMatMul {
 public:
  static constexpr const char* kName = "ShiftMatMul";
  static OpSpec spec();

  explicit ShiftMatMul(const OrtApi* api) : gemm_(api, /*matmul=*/true) {}
  Status init(const OrtKernelInfo* info) { return gemm_.init(info); }
  Status compute(OrtKernelContext* ctx) const;
  const OrtApi* api() const { return gemm_.api(); }

 private:
  ShiftGemm gemm_;
};

}  // namespace inq
