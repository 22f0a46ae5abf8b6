// GEMV / small-M GEMM straight from INQ weight codes: y = epilogue(alpha * A * W) for A of M (<= ~4) rows,
// where W (K x N) is given as the packed codes of docs/ops.md. At batch 1 such a product is bound by the bytes
// of W it reads, so the weights stay compact in memory (1 byte, or half a byte, per weight instead of 4) and are
// decoded in registers inside the kernel.
//
// Float mode (CodeGemvFloat): every W[k, n] = +-2^(e_n + m - 1) is split as 2^(e_n + c) * (+-2^(m - 1 - c)):
// the kernel decodes codes to the second factor with a table of the tensor (c centres the magnitudes used, so
// the table stays far from float overflow), and the output applies alpha * 2^(e_n + c) per column, in double.
// Scaling by a power of two is exact, so this equals the product with decoded weights up to summation order
// (and except for weights that would be float subnormals or infinities themselves).
// Layout by the largest magnitude index m used: m <= 7 two codes per byte (8 MB for 4096 x 4096), m <= 15
// one byte and a 32-entry permute table, else one byte decoded by integer ops on the exponent field.
//
// Integer mode (CodeGemvInt): A is quantized per tensor to u8 (QuantizeLinear; scale <= 0 means dynamic, as
// onnxruntime's DynamicQuantizeLinear). W[k, n] = unit[n] * L[k, n] with integer levels L = +-2^j, unit[n] =
// 2^(e_n + c_n), c_n = smallest magnitude index used in column n minus 1 (exact, never rounds a weight).
// acc = sum_k x_q * L (int32), d = acc - zp * colsum[n], y = epilogue(float(double(d) * (double(x_scale) *
// double(alpha) * unit[n]))). Levels up to 64 (every column spans <= 7 powers of two: any code of b <= 4 bits,
// INQ up to 4 bits) are stored as nibbles, decoded by a 16-entry byte shuffle and multiplied by vpdpbusd
// (u8 x s8). A column spanning 8 powers of two (INQ at 5 bits: levels up to 128, beyond int8) is stored one
// byte per weight and split by sign: |L| <= 128 fits u8, so vpdpbusd takes the weights as the unsigned operand
// and x_q - 128 as the signed one, one accumulator per sign (exact; 2 dot products per weight). Wider spans
// are refused by prepare (use float mode). prepare also refuses K so large that int32 could overflow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/code_gemv_kernels.h"
#include "kernels/epilogue.h"
#include "kernels/thread_pool.h"

namespace inq {

enum class CodeIsa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

const char* code_isa_name(CodeIsa isa);
// Best path for this CPU. Float mode: AVX-512 needs F/BW/VL/DQ, AVX2 needs AVX2+FMA; capped by INQ_ONNX_ISA
// (generic | avx2 | avx512). Integer mode: AVX-512 needs BW/VL/VNNI (+VBMI for the 128-level layout, else that
// layout runs generic); capped by INQ_ONNX_QISA (generic | avx2 | avx512vnni).
CodeIsa code_float_isa();
CodeIsa code_int_isa();
// Whether `isa` can run here (ignoring the environment caps); tests force each supported path.
bool code_isa_supported(CodeIsa isa, bool integer_mode);

// The weight operand as stored in the model.
struct CodeWeights {
  const uint8_t* packed = nullptr;
  int64_t packed_bytes = 0;
  int bits = 0;
  int64_t k = 0, n = 0;
  bool trans = false;                  // weight_shape is (N, K) (Gemm transB = 1) instead of (K, N)
  std::vector<int64_t> exponent_base;  // 1 value or n values
};

// 64-byte aligned bytes.
class CodeBuffer {
 public:
  bool allocate(size_t bytes);  // false when out of memory; contents zeroed
  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free { void operator()(uint8_t* p) const; };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

class CodeGemvFloat {
 public:
  // Packs the codes once. Returns an error message (empty on success); never throws.
  std::string prepare(const CodeWeights& w);
  // y[i * ldy + j] = ep.apply(alpha * sum_k a[i * lda + k] * W[k, j], j, i * ldy + j) for i < m, j < n
  // (ep.summand is indexed like y). Any m works; the kernel is made for m <= 4 (larger m re-reads W per 4 rows).
  // Returns an error message (empty on success); never throws.
  std::string run(const float* a, int64_t lda, int64_t m, float alpha, const Epilogue& ep, float* y, int64_t ldy,
                   const TaskRunner& runner, CodeIsa isa) const;
  std::string run(const float* a, int64_t lda, int64_t m, float alpha, const Epilogue& ep, float* y, int64_t ldy,
                  const TaskRunner& runner) const {
    return run(a, lda, m, alpha, ep, y, ldy, runner, code_float_isa());
  }
  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  int layout() const { return layout_; }              // CgFloatLayout
  size_t weight_bytes() const { return codes_.size(); }  // bytes the kernel streams per product

 private:
  CodeBuffer codes_;
  std::vector<float> table_;         // 256 entries
  std::vector<double> col_scale_;    // 2^(e_n + c) per column
  int64_t k_ = 0, n_ = 0, panels_ = 0, panel_bytes_ = 0;
  int layout_ = kCgB8;
  int32_t exp_bias_ = 0;
};

// QuantizeLinear parameters of A: scale > 0 uses (scale, zero_point), zero_point in 0..255; scale <= 0 computes
// them from A as DynamicQuantizeLinear: range [min(0, min A), max(0, max A)], scale = range / 255 (1 if empty),
// zero_point = round_half_even(clamp(-min / scale, 0, 255)).
struct CodeQuant {
  float scale = 0.0f;
  int zero_point = 0;
};
void code_dynamic_quant(const float* a, int64_t lda, int64_t m, int64_t k, CodeQuant* out);

class CodeGemvInt {
 public:
  // Packs the codes once. Returns an error message (empty on success), e.g. when a column spans more than 8
  // powers of two or K is too large for int32 accumulation; never throws.
  std::string prepare(const CodeWeights& w);
  // y[i * ldy + j] = ep.apply(float(double(d) * double(scale) * double(alpha) * unit(j)), j, i * ldy + j) with
  // d = sum_k (q(a[i * lda + k]) - zp) * level(k, j) (see the top of this file). If `used` is set it receives the
  // quantization parameters applied. Returns an error message (empty on success); never throws.
  std::string run(const float* a, int64_t lda, int64_t m, CodeQuant quant, float alpha, const Epilogue& ep, float* y,
                  int64_t ldy, const TaskRunner& runner, CodeIsa isa, CodeQuant* used = nullptr) const;
  std::string run(const float* a, int64_t lda, int64_t m, CodeQuant quant, float alpha, const Epilogue& ep, float* y,
                  int64_t ldy, const TaskRunner& runner) const {
    return run(a, lda, m, quant, alpha, ep, y, ldy, runner, code_int_isa());
  }
  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  int layout() const { return layout_; }  // CgIntLayout
  int unit_exponent(int64_t col) const { return unit_exp_[col]; }  // W[k, col] = 2^unit_exponent * level
  size_t weight_bytes() const { return codes_.size(); }

 private:
  CodeBuffer codes_;
  std::vector<int16_t> levels_;   // 256 entries
  std::vector<uint8_t> vtab_;     // 192 bytes, see CgIntArgs
  std::vector<int> unit_exp_;     // e_n + c_n per column
  std::vector<double> unit_scale_;  // 2^unit_exp_
  std::vector<int64_t> colsum_;   // sum_k level per column
  int64_t k_ = 0, n_ = 0, kq_ = 0, panels_ = 0, panel_bytes_ = 0;
  int layout_ = kCgINib;
};

}  // namespace inq
