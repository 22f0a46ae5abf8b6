// com.inq ShiftGemm: ONNX Gemm whose B is bit-packed power-of-two weights (docs/ops.md).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/code_gemv.h"
#include "kernels/qgemm.h"
#include "kernels/sgemm.h"
#include "ort_util.h"

namespace inq {

// B prepared for both shapes of A: few rows (batch 1 to kGemvRows) run a GEMV that decodes the compact codes in
// registers, so the weights stay 1 byte or half a byte each in memory; more rows run a blocked GEMM whose
// operand (float panels, or integer levels in integer mode) is packed on first use.
struct GemmWeights {
  static constexpr int64_t kGemvRows = 4;
  std::vector<uint8_t> codes;  // the packed bytes, for the GEMM operand packed later
  bool gemv = false;           // the code GEMV took these weights (it refuses what it cannot hold exactly)
  CodeGemvFloat gemv_float;
  CodeGemvInt gemv_int;
  mutable std::once_flag packed_once;
  mutable Status packed_status;
  mutable PrepackedPanels panels;  // float mode: B as n x k panels
  mutable QGemmWeights levels;     // integer mode
  ScratchPool pool;                // the float GEMM's packing buffers
};

class ShiftGemm {
 public:
  static constexpr const char* kName = "ShiftGemm";
  static OpSpec spec();

  // `matmul`: the product core of ShiftMatMul, named so in messages; it has no transA, transB, alpha or beta.
  explicit ShiftGemm(const OrtApi* api, bool matmul = false) : api_(api), matmul_(matmul) {}
  // Reads and checks the attributes; prepares B if B_packed is an initializer.
  Status init(const OrtKernelInfo* info);
  Status compute(OrtKernelContext* ctx) const;
  const OrtApi* api() const { return api_; }

  // Y (m x N) = alpha * A' * B' + beta * C for A holding m rows of K (or their transpose) and C of c_rows x
  // c_cols, broadcast to (m, N) (c may be absent). Shapes must have been checked by the caller.
  Status run(OrtKernelContext* ctx, const float* a, int64_t m, const TensorRef& c, int64_t c_rows, int64_t c_cols,
             float* y) const;
  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  std::string prefix() const;

 private:
  Status prepare(const TensorRef& packed, GemmWeights* out) const;
  // The blocked-GEMM operand of `w`, packed once.
  Status blocked_operand(const GemmWeights& w) const;
  // beta * C as the epilogue's per-column bias or, for other broadcasts, an expanded (M, N) summand.
  void c_epilogue(const TensorRef& c, int64_t m, int64_t c_rows, int64_t c_cols, std::vector<float>* storage,
                  Epilogue* ep) const;
  void float_gemm(const GemmWeights& w, const float* a, int64_t m, const float* c, int64_t c_rows, int64_t c_cols,
                  float* y, const TaskRunner& runner) const;

  const OrtApi* api_;
  bool matmul_ = false;
  PackedWeightAttrs weight_;  // shape (K, N), or (N, K) when transB
  float alpha_ = 1.0f, beta_ = 1.0f;
  bool trans_a_ = false, trans_b_ = false;
  int64_t k_ = 0, n_ = 0;
  Epilogue fused_;  // the fused activation, applied after alpha * A' * B' + beta * C
  bool integer_ = false;  // integer mode: uint8 A, integer levels, int32 accumulation
  QuantParams x_quant_;   // static quantization of A, or dynamic (scale 0)
  std::unique_ptr<GemmWeights> constant_b_;  // when B_packed is a constant initializer
};

}  // namespace inq
