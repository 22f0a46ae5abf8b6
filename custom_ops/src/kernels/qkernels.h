// Integer-mode micro-kernels: one function table per ISA (kept free of library headers, like microkernel.h).
//
// Operand layouts shared by every ISA:
//  - activations: u8 "quads", 4 consecutive depth values of one column interleaved in one 32-bit word; the
//    quad of depth-quad kq and column j lives at b[boff[kq] + 4*j .. +3] (16 columns = one 64-byte run).
//  - weights: panels of kQMR rows, depth-quad major: a[(kq*kQMR + r)*wbytes ...]. wbytes = 4: s8 x 4
//    (w0, w1, w2, w3); wbytes = 8: s16 pairs (w0, w2), (w1, w3) for vpmaddwd.
#pragma once

#include <cstdint>

namespace inq {

constexpr int kQMR = 8;      // weight rows per panel
constexpr int kQCols = 16;   // column counts handed to tile() are multiples of this
constexpr int kQChunk = 48;  // columns per tile() call from the drivers (B chunk kept in L1 over the panels)

// One output row's rescale: y[j] = clamp(float(acc[j] - zprs) * mult (+ bias) (+ summand[j])), with
// float(zprs - acc[j]) instead for rows stored negated (so that a zero difference still gives +0, not -0).
// The clamp is std::min(std::max(v, lo), hi) with std::max/min argument order, as Epilogue::apply.
struct QRowEpilogue {
  int32_t zprs;   // zero_point * rowsum
  bool negate;    // the row's levels are stored negated
  float mult;     // unit * x_scale
  float bias;     // used if has_bias
  bool has_bias;
  const float* summand;  // n values or null
  float lo, hi;
};

struct QKernels {
  const char* name;
  int wbytes;  // bytes per (depth quad, row) in weight panels
  // c[r*ldc + j] = sum_{kq < kqn, i < 4} w(kq, r, i) * b[boff[kq] + 4*j + i] for r < kQMR, j < ncols
  // (ncols a multiple of kQCols). Overwrites c.
  void (*tile)(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc,
               int64_t ncols);
  // dst[j] = quad of (q(src[0][j]), ..., q(src[3][j])), q = quantize; a null src[i] gives zp.
  void (*quantize4)(const float* const* src, int64_t n, float scale, int32_t zp, uint32_t* dst);
  // lo = min(lo, x...), hi = max(hi, x...), NaN ignored.
  void (*minmax)(const float* x, int64_t n, float* lo, float* hi);
  void (*epilogue)(const QRowEpilogue& e, const int32_t* acc, int64_t n, float* y);
};

const QKernels& generic_qkernels();
#if defined(INQ_HAVE_X86_KERNELS)
const QKernels& avx2_qkernels();
const QKernels& avx512vnni_qkernels();
#endif

// The table for this CPU, capped by INQ_ONNX_QISA; by name ("generic", "avx2", "avx512vnni"), or nullptr if
// not compiled in / not supported by this CPU.
const QKernels& active_qkernels();
const QKernels* qkernels_by_name(const char* name);

}  // namespace inq
