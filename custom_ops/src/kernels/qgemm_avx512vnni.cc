// AVX-512 VNNI integer kernels: vpdpbusd (u8 activations x s8 weights, 4 products summed per 32-bit lane).
// Built with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; only called after run-time detection.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's own AVX-512 headers trip these (_mm512_undefined_* in masked intrinsics, GCC PR105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/avx512_lanes.h"
#include "kernels/quantize.h"

namespace inq {
namespace {

using avx512::codes16;
using avx512::quantize16;
using avx512::store16_u8;
using avx512::tail_mask;

inline int32_t load32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// kQMR rows x NV*16 columns, accumulators in registers over the whole depth, then handed row by row to
// sink.row<NV>(r, acc0, acc1, acc2) (the unused ones zero). Named variables, not an array: GCC spills an array
// of vectors through the stack on every step.
// With Tail, one more column (NV * 16) in the same pass: its 8 rows in one ymm, the weights of the depth quad as
// the vector operand (tail_cols' layout), stored raw to tail[r * ldc].
template <int NV, class Sink, bool Tail = false>
inline void tile_cols(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, const Sink& sink,
                      int32_t* tail = nullptr, int64_t ldc = 0) {
  static_assert(kQMR == 8, "tile written for 8 rows");
#define INQ_ACC(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0;
  INQ_ACC(0) INQ_ACC(1) INQ_ACC(2) INQ_ACC(3) INQ_ACC(4) INQ_ACC(5) INQ_ACC(6) INQ_ACC(7)
#undef INQ_ACC
  __m256i ct = _mm256_setzero_si256();
  for (int64_t kq = 0; kq < kqn; ++kq) {
    const uint8_t* x = b + boff[kq];
    const __m512i x0 = _mm512_loadu_si512(x);
    const __m512i x1 = NV > 1 ? _mm512_loadu_si512(x + 64) : x0;
    const __m512i x2 = NV > 2 ? _mm512_loadu_si512(x + 128) : x0;
    const int8_t* w = a + kq * kQMR * 4;
    if (Tail)
      ct = _mm256_dpbusd_epi32(ct, _mm256_set1_epi32(load32(x + 64 * NV)),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
#define INQ_ROW(r)                                                     \
  {                                                                    \
    const __m512i wr = _mm512_set1_epi32(load32(w + 4 * r));           \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, x0, wr);                    \
    if (NV > 1) c##r##1 = _mm512_dpbusd_epi32(c##r##1, x1, wr);        \
    if (NV > 2) c##r##2 = _mm512_dpbusd_epi32(c##r##2, x2, wr);        \
  }
    INQ_ROW(0) INQ_ROW(1) INQ_ROW(2) INQ_ROW(3) INQ_ROW(4) INQ_ROW(5) INQ_ROW(6) INQ_ROW(7)
#undef INQ_ROW
  }
#define INQ_SINK(r) sink.template row<NV>(r, c##r##0, c##r##1, c##r##2);
  INQ_SINK(0) INQ_SINK(1) INQ_SINK(2) INQ_SINK(3) INQ_SINK(4) INQ_SINK(5) INQ_SINK(6) INQ_SINK(7)
#undef INQ_SINK
  if (Tail) {
    alignas(32) int32_t t[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), ct);
    for (int r = 0; r < 8; ++r) tail[r * ldc] = t[r];
  }
}

// The accumulators stored as they are (tile()).
struct StoreSink {
  int32_t* c;
  int64_t ldc;
  template <int NV>
  void row(int r, __m512i a0, __m512i a1, __m512i a2) const {
    _mm512_storeu_si512(c + r * ldc, a0);
    if (NV > 1) _mm512_storeu_si512(c + r * ldc + 16, a1);
    if (NV > 2) _mm512_storeu_si512(c + r * ldc + 32, a2);
  }
};

void tile(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc,
          int64_t ncols) {
  int64_t j = 0;
  for (; j + 48 <= ncols; j += 48) tile_cols<3>(kqn, a, b + 4 * j, boff, StoreSink{c + j, ldc});
  if (ncols - j == 32) tile_cols<2>(kqn, a, b + 4 * j, boff, StoreSink{c + j, ldc});
  else if (ncols - j == 16) tile_cols<1>(kqn, a, b + 4 * j, boff, StoreSink{c + j, ldc});
}

// tile() for R < 16 columns, weights as the vector operand: one ymm of 8 rows x 4 depth per depth quad, each
// column's quad broadcast, acc[j] holds rows 0..7 of column j (stored transposed at the end).
template <int R>
void tail_cols(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc) {
  static_assert(kQMR == 8, "tail written for 8 rows");
  // U depth quads per step into separate accumulators (exact integer sums in any order): >= 8 independent
  // chains to cover the vpdpbusd latency.
  constexpr int U = R >= 8 ? 1 : (8 + R - 1) / R;
  __m256i acc[U][R];
#pragma GCC unroll 16
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 16
    for (int j = 0; j < R; ++j) acc[u][j] = _mm256_setzero_si256();
  int64_t kq = 0;
  for (; kq + U <= kqn; kq += U) {
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) {
      const uint8_t* x = b + boff[kq + u];
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + (kq + u) * kQMR * 4));
#pragma GCC unroll 16
      for (int j = 0; j < R; ++j) acc[u][j] = _mm256_dpbusd_epi32(acc[u][j], _mm256_set1_epi32(load32(x + 4 * j)), w);
    }
  }
  for (; kq < kqn; ++kq) {
    const uint8_t* x = b + boff[kq];
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + kq * kQMR * 4));
#pragma GCC unroll 16
    for (int j = 0; j < R; ++j) acc[0][j] = _mm256_dpbusd_epi32(acc[0][j], _mm256_set1_epi32(load32(x + 4 * j)), w);
  }
  alignas(32) int32_t t[R][8];
#pragma GCC unroll 16
  for (int j = 0; j < R; ++j) {
    __m256i v = acc[0][j];
#pragma GCC unroll 16
    for (int u = 1; u < U; ++u) v = _mm256_add_epi32(v, acc[u][j]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(t[j]), v);
  }
  for (int r = 0; r < 8; ++r)
    for (int j = 0; j < R; ++j) c[r * ldc + j] = t[j][r];
}

void tile_tail(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc,
               int64_t ncols) {
  // Up to 8 columns per pass (8 accumulators + loads stay in registers).
  for (int64_t j = 0; j < ncols;) {
    const int64_t n = std::min<int64_t>(8, ncols - j);
    switch (n) {
      case 1: tail_cols<1>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
      case 2: tail_cols<2>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
      case 3: tail_cols<3>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
      case 4: tail_cols<4>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
      case 5: tail_cols<5>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
      case 6: tail_cols<6>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
      case 7: tail_cols<7>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
      default: tail_cols<8>(kqn, a, b + 4 * j, boff, c + j, ldc); break;
    }
    j += n;
  }
}


// Up to 4 column groups of 16 per pass, accumulators in registers across the entries (masked past ncols).
void sparse_add(const int32_t* kq, const uint32_t* w4, int64_t n, const uint8_t* b, const int64_t* boff, int32_t* c,
                int64_t ncols) {
  for (int64_t j = 0; j < ncols; j += 64) {
    const int64_t left = ncols - j;
    const __mmask16 m0 = tail_mask(left), m1 = tail_mask(left - 16), m2 = tail_mask(left - 32),
                    m3 = tail_mask(left - 48);
    int32_t* cj = c + j;
    __m512i a0 = _mm512_maskz_loadu_epi32(m0, cj), a1 = _mm512_maskz_loadu_epi32(m1, cj + 16);
    __m512i a2 = _mm512_maskz_loadu_epi32(m2, cj + 32), a3 = _mm512_maskz_loadu_epi32(m3, cj + 48);
    for (int64_t e = 0; e < n; ++e) {
      const uint8_t* x = b + boff[kq[e]] + 4 * j;
      const __m512i w = _mm512_set1_epi32(static_cast<int32_t>(w4[e]));
      a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi32(m0, x), w);
      a1 = _mm512_dpbusd_epi32(a1, _mm512_maskz_loadu_epi32(m1, x + 64), w);
      a2 = _mm512_dpbusd_epi32(a2, _mm512_maskz_loadu_epi32(m2, x + 128), w);
      a3 = _mm512_dpbusd_epi32(a3, _mm512_maskz_loadu_epi32(m3, x + 192), w);
    }
    _mm512_mask_storeu_epi32(cj, m0, a0);
    _mm512_mask_storeu_epi32(cj + 16, m1, a1);
    _mm512_mask_storeu_epi32(cj + 32, m2, a2);
    _mm512_mask_storeu_epi32(cj + 48, m3, a3);
  }
}


void quantize4(const float* const* src, int64_t n, float scale, int32_t zp, uint32_t* dst) {
  const __m512 sv = _mm512_set1_ps(scale), zv = _mm512_set1_ps(static_cast<float>(zp));
  const __m512i zpi = _mm512_set1_epi32(zp);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    __m512i out = _mm512_setzero_si512();
    for (int i = 0; i < 4; ++i) {
      const __m512i q = src[i] ? quantize16(_mm512_maskz_loadu_ps(m, src[i] + j), sv, zv) : zpi;
      out = _mm512_or_si512(out, _mm512_slli_epi32(q, 8 * i));
    }
    _mm512_mask_storeu_epi32(dst + j, m, out);
  }
}

void minmax(const float* x, int64_t n, float* lo, float* hi) {
  __m512 l = _mm512_set1_ps(*lo), h = _mm512_set1_ps(*hi);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    l = _mm512_min_ps(_mm512_mask_loadu_ps(l, m, x + j), l);  // x < l ? x : l (NaN ignored)
    h = _mm512_max_ps(_mm512_mask_loadu_ps(h, m, x + j), h);
  }
  *lo = _mm512_reduce_min_ps(l);
  *hi = _mm512_reduce_max_ps(h);
}

// One row's rescale (QRowEpilogue) of 16 accumulators (with their 16 summands when the row has one): the
// float operations of the scalar epilogue, shared by the float and the uint8 outputs and by tile_epilogue.
class RowRescale {
 public:
  explicit RowRescale(const QRowEpilogue& e)
      : negate_(e.negate), has_bias_(e.has_bias), zprs_(_mm512_set1_epi32(e.zprs)), mult_(_mm512_set1_ps(e.mult)),
        bias_(_mm512_set1_ps(e.bias)), lo_(_mm512_set1_ps(e.lo)), hi_(_mm512_set1_ps(e.hi)) {}
  __m512 operator()(__m512i a, const __m512* summand) const {
    __m512 v = _mm512_cvtepi32_ps(negate_ ? _mm512_sub_epi32(zprs_, a) : _mm512_sub_epi32(a, zprs_));
    v = _mm512_mul_ps(v, mult_);
    if (has_bias_) v = _mm512_add_ps(v, bias_);
    if (summand) v = _mm512_add_ps(v, *summand);
    v = _mm512_max_ps(lo_, v);  // v < lo ? lo : v, as std::max(v, lo)
    return _mm512_min_ps(hi_, v);  // hi < v ? hi : v, as std::min(v, hi)
  }
  // Columns j.. of a row in memory (lanes of m).
  __m512 operator()(const QRowEpilogue& e, const int32_t* acc, int64_t j, __mmask16 m) const {
    const __m512i a = _mm512_maskz_loadu_epi32(m, acc + j);
    if (!e.summand) return (*this)(a, nullptr);
    const __m512 s = _mm512_maskz_loadu_ps(m, e.summand + j);
    return (*this)(a, &s);
  }

 private:
  bool negate_, has_bias_;
  __m512i zprs_;
  __m512 mult_, bias_, lo_, hi_;
};

// dequantize_u8 of 16 codes.
inline __m512 dequantize16(__m128i z, __m512i zpi, __m512 scale) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(z), zpi)), scale);
}

void epilogue(const QRowEpilogue& e, const int32_t* acc, int64_t n, float* y) {
  const RowRescale rescale(e);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_storeu_ps(y + j, m, rescale(e, acc, j, m));
  }
}

void interleave4_u8(const uint8_t* const* src, int64_t n, int32_t zp, uint32_t* dst) {
  const __m512i zpi = _mm512_set1_epi32(zp);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    __m512i out = _mm512_setzero_si512();
    for (int i = 0; i < 4; ++i) {
      const __m512i q = src[i] ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, src[i] + j)) : zpi;
      out = _mm512_or_si512(out, _mm512_slli_epi32(q, 8 * i));
    }
    _mm512_mask_storeu_epi32(dst + j, m, out);
  }
}

void epilogue_u8(const QRowEpilogue& e, const int32_t* acc, int64_t n, float scale, int32_t zp, uint8_t* y) {
  const RowRescale rescale(e);
  const __m512 inv = _mm512_set1_ps(inverse_scale(scale)), zv = _mm512_set1_ps(static_cast<float>(zp));
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    store16_u8(y + j, m, codes16(_mm512_mul_ps(rescale(e, acc, j, m), inv), zv));
  }
}

void quantize_u8(const float* src, int64_t n, float scale, int32_t zp, uint8_t* dst) {
  const __m512 inv = _mm512_set1_ps(inverse_scale(scale)), zv = _mm512_set1_ps(static_cast<float>(zp));
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    store16_u8(dst + j, m, codes16(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + j), inv), zv));
  }
}

void dequantize_u8(const uint8_t* src, int64_t n, float scale, int32_t zp, float* dst) {
  const __m512 sv = _mm512_set1_ps(scale);
  const __m512i zpi = _mm512_set1_epi32(zp);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_storeu_ps(dst + j, m, dequantize16(_mm_maskz_loadu_epi8(m, src + j), zpi, sv));
  }
}

// tile_epilogue's sink: each row's accumulators rescaled and stored where `out` says (all 16 lanes valid).
class EpilogueSink {
 public:
  EpilogueSink(const QTileOutput& out, int64_t col)
      : out_(out), col_(col), yinv_(_mm512_set1_ps(inverse_scale(out.yscale))),
        yzp_(_mm512_set1_ps(static_cast<float>(out.yzp))), zscale_(_mm512_set1_ps(out.zscale)),
        zzp_(_mm512_set1_epi32(out.zzp)) {}
  template <int NV>
  void row(int r, __m512i a0, __m512i a1, __m512i a2) const {
    if (r >= out_.rows) return;
    const QRowEpilogue& e = out_.e[r];
    const RowRescale rescale(e);
    one(rescale, e, r, 0, a0);
    if (NV > 1) one(rescale, e, r, 16, a1);
    if (NV > 2) one(rescale, e, r, 32, a2);
  }

 private:
  void one(const RowRescale& rescale, const QRowEpilogue& e, int r, int64_t j, __m512i a) const {
    const int64_t at = col_ + j;
    __m512 v;
    if (e.summand) {
      const __m512 s = _mm512_loadu_ps(e.summand + at);
      v = rescale(a, &s);
    } else if (out_.z8) {
      const __m512 s =
          dequantize16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(out_.z8[r] + at)), zzp_, zscale_);
      v = rescale(a, &s);
    } else {
      v = rescale(a, nullptr);
    }
    if (out_.y8) store16_u8(out_.y8[r] + at, 0xFFFF, codes16(_mm512_mul_ps(v, yinv_), yzp_));
    else _mm512_storeu_ps(out_.y[r] + at, v);
  }

  const QTileOutput& out_;
  int64_t col_;
  __m512 yinv_, yzp_, zscale_;
  __m512i zzp_;
};

void tile_epilogue(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, const QTileOutput& out,
                   int64_t col, int64_t ncols, int32_t* tail, int64_t ldc) {
  int64_t j = 0;
  for (; j + 48 <= ncols; j += 48) {
    if (tail && j + 48 == ncols) tile_cols<3, EpilogueSink, true>(kqn, a, b + 4 * j, boff, EpilogueSink(out, col + j), tail, ldc);
    else tile_cols<3>(kqn, a, b + 4 * j, boff, EpilogueSink(out, col + j));
  }
  if (ncols - j == 32) tile_cols<2>(kqn, a, b + 4 * j, boff, EpilogueSink(out, col + j));
  else if (ncols - j == 16) tile_cols<1>(kqn, a, b + 4 * j, boff, EpilogueSink(out, col + j));
}

}  // namespace

const QKernels& avx512vnni_qkernels() {
  static const QKernels k{"avx512vnni",   4,           tile,           quantize4,          minmax,
                          epilogue,       dw_quantize_avx512, dw_conv_avx512, interleave4_u8, epilogue_u8,
                          quantize_u8,    dequantize_u8, tile_tail,      sparse_add,
                          tile_epilogue};
  return k;
}

}  // namespace inq
