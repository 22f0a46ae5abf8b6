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

// One output channel of the direct (depthwise / small grouped) path, kernels/qdepthwise.h. The input is held
// as floats v = q - zp (exact small integers) in zero-padded planes; output (r, c) is
//   acc = sum_{t < taps} w[t] * plane[off[t] + r * row_step + c]
// accumulated in float in any order (every partial sum is an integer below 2^24, so exact: the driver keeps
// taps * 255 * 128 < 2^24), then y[r * cols + c] = clamp(acc * mult (+ bias) (+ summand[r * cols + c])), the
// very float operations of QKernels::epilogue.
struct QDwArgs {
  const float* plane;
  const int64_t* off;  // taps offsets, in floats
  const float* w;      // taps levels
  int64_t taps;
  // 3: the taps are a dense 3x3 window of unit stride and dilation, in (ki, kj) order with
  // off[3 * ki + kj] = off[0] + ki * row_step + kj (kernels may reuse loads across output rows); 0: any taps.
  int shape;
  int64_t rows, cols, row_step;
  float mult, bias;
  bool has_bias;
  const float* summand;  // rows * cols values or null
  float lo, hi;
  float* y;  // rows * cols
};

// Where tile_epilogue puts one panel's results, column j of the tile going to column `col + j` of each row:
// row r < rows goes through e[r] (a float summand at e[r].summand + col + j, or a uint8 one at z8[r] + col + j
// dequantized as dequantize_u8 does) and is stored as float at y[r] + col + j, or, with y8, as uint8 at
// y8[r] + col + j (epilogue_u8's requantization with yscale / yzp). Rows past `rows` are panel padding.
struct QTileOutput {
  int rows;
  const QRowEpilogue* e;
  float* const* y;
  uint8_t* const* y8;        // null: float output
  const uint8_t* const* z8;  // null: no uint8 summand
  float zscale, yscale;
  int32_t zzp, yzp;
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
  // Direct path. dw_quantize: for each row r < rows, element j < n of row x + r * ldx goes to
  // dst[j % sw] + r * ldd + j / sw (the rows of the stride phases; a null dst[i] skips those elements) as
  // float(q(x)) - zp, q = quantize (an exact float integer).
  void (*dw_quantize)(const float* x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, float scale, int32_t zp,
                      float* const* dst, int64_t ldd);
  void (*dw_conv)(const QDwArgs& a);
  // uint8 tensors between integer layers (every ISA: the very operations of the generic versions).
  // dst[j] = quad of (src[0][j], ..., src[3][j]) (u8 input copied as it is); a null src[i] gives zp.
  void (*interleave4_u8)(const uint8_t* const* src, int64_t n, int32_t zp, uint32_t* dst);
  // The epilogue's v (as QKernels::epilogue computes it), stored as u8 = saturate(round_half_even(v / scale)
  // + zp) with the float operations of quantize_one.
  void (*epilogue_u8)(const QRowEpilogue& e, const int32_t* acc, int64_t n, float scale, int32_t zp, uint8_t* y);
  // dst[j] = quantize_one(src[j], scale, zp) (u8 output of the direct path).
  void (*quantize_u8)(const float* src, int64_t n, float scale, int32_t zp, uint8_t* dst);
  // dst[j] = float(src[j] - zp) * scale (a u8 summand).
  void (*dequantize_u8)(const uint8_t* src, int64_t n, float scale, int32_t zp, float* dst);
  // Optional (may be null): tile() for 0 < ncols < kQCols columns, writing only those (the last, partial column
  // group of a GEMM, instead of a whole kQCols group of which most would be dropped).
  void (*tile_tail)(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc,
                    int64_t ncols);
  // Optional (may be null): one sparse weight row added into an accumulator row,
  //   c[j] += sum_{e < n, i < 4} w_i(e) * b[boff[kq[e]] + 4*j + i] for j < ncols (any ncols >= 0),
  // w_i(e) = s8 byte i of w4[e]. Carries the +128 corrections of rows that hold only a few of them (see qpack.h);
  // without it they take whole correction rows in the panels.
  void (*sparse_add)(const int32_t* kq, const uint32_t* w4, int64_t n, const uint8_t* b, const int64_t* boff,
                     int32_t* c, int64_t ncols);
  // Optional (may be null): tile() with the epilogue applied to the accumulators in registers (no round trip
  // through memory, no separate pass), the results stored as `out` says; the very float operations of
  // epilogue / epilogue_u8 (and dequantize_u8 for a uint8 summand).
  // With `tail` (ncols a multiple of kQChunk), column ncols too is computed in the same pass over the weights
  // and stored raw, as tile() would: tail[r * ldc] for r < kQMR (a lone last column, e.g. the 49th of a 7x7
  // output, that would otherwise take its own pass).
  void (*tile_epilogue)(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, const QTileOutput& out,
                        int64_t col, int64_t ncols, int32_t* tail, int64_t ldc);
};

// Direct-path kernels of each ISA (qdepthwise_*.cc), referenced by the tables.
void dw_quantize_generic(const float* x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, float scale, int32_t zp,
                         float* const* dst, int64_t ldd);
void dw_conv_generic(const QDwArgs& a);
#if defined(INQ_HAVE_X86_KERNELS)
void dw_quantize_avx2(const float* x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, float scale, int32_t zp,
                        float* const* dst, int64_t ldd);
void dw_conv_avx2(const QDwArgs& a);
void dw_quantize_avx512(const float* x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, float scale, int32_t zp,
                        float* const* dst, int64_t ldd);
void dw_conv_avx512(const QDwArgs& a);
#endif

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
