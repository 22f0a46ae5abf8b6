// com.inq ShiftGemm: ONNX Gemm whose B is bit-packed power-of-two weights (docs/ops.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/qgemm.h"
#include "kernels/sgemm.h"
#include "ort_util.h"

namespace inq {

class ShiftGemm {
 public:
  static constexpr const char* kName = "ShiftGemm";
  static OpSpec spec();

  explicit ShiftGemm(const OrtApi* api) : api_(api) {}
  // Reads and checks the attributes; decodes and pre-packs B if B_packed is an initializer.
  Status init(const OrtKernelInfo* info);
  Status compute(OrtKernelContext* ctx) const;
  const OrtApi* api() const { return api_; }

 private:
  Status decode(const TensorRef& packed, PrepackedPanels* out) const;
  Status decode_integer(const TensorRef& packed, QGemmWeights* out) const;
  // Integer mode: beta * C becomes the epilogue's per-column bias or an expanded summand.
  Status compute_integer(OrtKernelContext* ctx, const TensorRef& a, const TensorRef& c, int64_t m, int64_t c_rows,
                         int64_t c_cols, float* y) const;
  std::string prefix() const;

  const OrtApi* api_;
  PackedWeightAttrs weight_;  // shape (K, N), or (N, K) when transB
  float alpha_ = 1.0f, beta_ = 1.0f;
  bool trans_a_ = false, trans_b_ = false;
  int64_t k_ = 0, n_ = 0;
  Epilogue fused_;  // the fused activation, applied after alpha * A' * B' + beta * C
  bool integer_ = false;  // integer mode: uint8 A, integer levels, int32 accumulation
  QuantParams x_quant_;   // static quantization of A, or dynamic (scale 0)
  std::unique_ptr<QGemmWeights> constant_qb_;  // integer mode, when B_packed is a constant initializer
  std::unique_ptr<PrepackedPanels> constant_b_;  // B as n x k panels, when B_packed is a constant initializer
};

}  // namespace inq
