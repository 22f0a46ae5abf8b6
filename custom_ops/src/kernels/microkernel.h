// Micro-kernel descriptor shared by the GEMM driver and the per-ISA kernel files (kept free of library headers).
#pragma once

#include <cstdint>

namespace inq {

// c[i*ldc + j] (i < mr, j < nr) = (accumulate ? c : (bias ? bias[i] : 0)) + alpha * sum_d a[d*mr+i] * B(d, j)
// with B(d, j) = b[d*nr + j] (packed panel) or, when b_offsets is set, b[b_offsets[d] + j] (rows read in place).
using MicroKernelFn = void (*)(int64_t kc, const float* a, const float* b, const int64_t* b_offsets, float* c,
                               int64_t ldc, float alpha, const float* bias, int accumulate);

// One channel plane of a depthwise convolution: y = clamp(bias + conv(x, w) + summand, lo, hi), where
// y, summand are oh x ow and x is h x w (pads may be negative). `scratch` holds depthwise_scratch_floats().
struct DepthwisePlaneArgs {
  const float* x;
  const float* w;  // kh x kw
  float bias;
  const float* summand;  // or null
  float lo, hi;          // -inf / +inf when there is no activation
  float* y;
  float* scratch;
  int64_t h, w_in, kh, kw, sh, sw, dh, dw, pad_t, pad_l, oh, ow;
};
using DepthwisePlaneFn = void (*)(const DepthwisePlaneArgs& args);
constexpr int kDepthwiseMaxTaps = 64;  // largest kh * kw a DepthwisePlaneFn takes

// Scratch of a DepthwisePlaneFn: the zero-padded plane split into sh x sw phase planes (phase (a, b) holds
// padded rows a, a + sh, ... and columns b, b + sw, ...) of just the rows and columns the taps read, plus slack.
inline int64_t depthwise_phase_rows(int64_t oh, int64_t kh, int64_t sh, int64_t dh) {
  const int64_t hp = (oh - 1) * sh + (kh - 1) * dh + 1;
  return (hp + sh - 1) / sh;
}
inline int64_t depthwise_scratch_floats(int64_t oh, int64_t ow, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                        int64_t dh, int64_t dw) {
  return sh * sw * depthwise_phase_rows(oh, kh, sh, dh) * depthwise_phase_rows(ow, kw, sw, dw) + 64;
}

// One piece of a B panel row gathered from a source with gaps (output rows of a padded plane): lanes `mask` of
// 16-float vector `vec` of the row, panel column j = 16 * vec + lane, take src[delta + j]. The lanes of a mask
// are contiguous (or none); lanes no piece covers are zero. Every vector of a row has the same number of pieces
// (npieces / ceil(width / 16), in vector order).
struct GatherPiece {
  int32_t vec;
  uint32_t mask;
  int64_t delta;
};
// Fills dn panel rows: dst[d * width + j] from base + offsets[d] through the pieces (sorted by vec).
using GatherPanelFn = void (*)(const float* base, const int64_t* offsets, int64_t dn, const GatherPiece* pieces,
                               int npieces, int width, float* dst);

// Micro-kernel variant reading A in place: c[i*ldc + j] = (accumulate ? c : 0) + sum_d a[a_offsets[d] + i] *
// b[d*nr + j] for the variant's rows i and columns j (B a packed panel). While it runs it also prefetches
// `prefetch_lines` 64-byte lines from `prefetch` into L2 (data needed next, e.g. the next weight block).
using InPlaceAKernelFn = void (*)(int64_t kc, const float* a, const int64_t* a_offsets, const float* b, float* c,
                                  int64_t ldc, int accumulate, const float* prefetch, int64_t prefetch_lines);

// Channel rows of an output from a GEMM result with positions as rows (the pixel-rows paths), epilogue included:
// y[j * ldy + p] = clamp((c[p * ldc + j] + bias[j]) + summand[j * ldz + p], lo, hi) for p < positions and
// j < channels (bias and summand optional; lo / hi are -inf / +inf without an activation, and a NaN stays NaN).
struct TransposedStoreArgs {
  const float* c;
  int64_t ldc;
  int64_t positions, channels;
  const float* bias;     // channels values, or null
  const float* summand;  // or null
  int64_t ldz;
  float lo, hi;
  float* y;
  int64_t ldy;
};
using TransposedStoreFn = void (*)(const TransposedStoreArgs& args);

// Winograd F(2x2, 3x3) tile transforms (kernels/winograd_tiles.h). Input: `len` tiles of one tile row and input
// channel, from the even (e[i]) and odd (o[i]) columns of patch rows i = 0..3, into v[xi * xs + k], writing
// whole vectors while v has `room` columns. Output: Y = A^T M A of `len` tiles of one output channel from
// m[xi * xs + k], plus bias, the summand (output[1][*]: z0 / z1, the two output rows) and the clamp
// (output[*][1]), into output rows y0 and y1.
using WinogradInputFn = void (*)(const float* const* e, const float* const* o, int64_t len, int64_t room, float* v,
                                 int64_t xs);
using WinogradOutputFn = void (*)(const float* m, int64_t xs, int64_t len, float bias, const float* z0,
                                  const float* z1, float lo, float hi, float* y0, float* y1);
struct WinogradTiles {
  WinogradInputFn input = nullptr;
  WinogradOutputFn output[2][2] = {};  // [summand][clamp]
};

struct MicroKernel {
  int mr;
  int nr;
  MicroKernelFn fn;
  const char* name;
  // Optional variants for edge tiles: edge[r - 1][v - 1] computes only r rows x v * vector columns of the same
  // panels (A panels still mr wide, B rows still nr apart), so that a GEMM with 49 rows or columns does not pay
  // for 56 or 96. Null entries fall back to `fn`.
  int vector = 0;
  MicroKernelFn edge[8][4] = {};
  // Optional depthwise plane kernel (null: the portable path in conv.cc).
  DepthwisePlaneFn depthwise = nullptr;
  // Optional B panel gather (null: the portable loop in conv.cc).
  GatherPanelFn gather = nullptr;
  // Optional in-place-A variants, a_in_place[r - 1][v - 1] for r rows x v vectors as edge[][] (null: pack A).
  InPlaceAKernelFn a_in_place[8][4] = {};
  // Optional transposed store (null: the portable loop in conv.cc).
  TransposedStoreFn store_transposed = nullptr;
  // Optional Winograd transforms built for this ISA (null: the baseline build in winograd.cc).
  WinogradTiles winograd = {};

  // The variant that covers `rows` x `columns` (at most mr x nr) with the least work.
  MicroKernelFn for_tile(int64_t rows, int64_t columns) const {
    if (vector > 0 && rows >= 1 && rows <= 8) {
      const int64_t v = (columns + vector - 1) / vector;
      if (v >= 1 && v <= 4 && v * vector <= nr && edge[rows - 1][v - 1]) return edge[rows - 1][v - 1];
    }
    return fn;
  }
};


}  // namespace inq
