// AVX-512 VNNI integer-mode panel kernels of the code GEMV (vpdpbusd: 4 u8 x s8 products per int32 lane) and
// the u8 quantization of A. Only this file is compiled with -mavx512vnni/-mavx512vbmi; it includes no library
// header with inline code (see sgemm_avx2.cc).
// GCC 12 reports the deliberately undefined source operand inside some intrinsics (_mm512_undefined_*) as
// uninitialized; the warning is a known false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/avx512_lanes.h"
#include "kernels/code_gemv_kernels.h"

namespace inq {
namespace {

inline __m512i bcast4(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Nibble layout: one 64-byte load holds 16 columns x 4 depths in its low nibbles and the next 16 columns in its
// high nibbles; vpshufb maps each nibble to its s8 level (table repeated in every 128-bit lane).
template <int M>
void nib_panel(const CgIntArgs& g) {
  __m512i acc[M][4];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_si512();
  const __m512i tab = _mm512_loadu_si512(g.vtab);
  const __m512i low = _mm512_set1_epi8(0x0F);
  const uint8_t* p = g.codes;
  for (int64_t q = 0; q < g.kq; ++q, p += 128) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 1024), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + 1088), _MM_HINT_T0);
    const __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 64);
    __m512i w[4];
    w[0] = _mm512_shuffle_epi8(tab, _mm512_and_si512(v0, low));
    w[1] = _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srli_epi16(v0, 4), low));
    w[2] = _mm512_shuffle_epi8(tab, _mm512_and_si512(v1, low));
    w[3] = _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srli_epi16(v1, 4), low));
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const __m512i x = bcast4(g.aq + i * g.ldq + 4 * q);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], x, w[j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      _mm512_storeu_si512(reinterpret_cast<void*>(g.acc + i * kCgPanel + 16 * j), acc[i][j]);
}

// Split layout (levels up to +-128): vpermb maps a code to max(level, 0) and max(-level, 0), both <= 128 and so
// valid u8 operands; A enters as the signed operand x_q - 128. Rows [r0, r0 + M).
template <int M>
void split_panel(const CgIntArgs& g, int r0) {
  __m512i pos[M][4], neg[M][4];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) pos[i][j] = neg[i][j] = _mm512_setzero_si512();
  const __m512i tpos = _mm512_loadu_si512(g.vtab + 64), tneg = _mm512_loadu_si512(g.vtab + 128);
  const uint8_t* p = g.codes;
  const uint8_t* aq = g.aq + r0 * g.ldq;
  for (int64_t q = 0; q < g.kq; ++q, p += 256) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 2048), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + 2112), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + 2176), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + 2240), _MM_HINT_T0);
    __m512i x[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) x[i] = bcast4(aq + i * g.ldq + 4 * q);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i v = _mm512_loadu_si512(p + 64 * j);
      const __m512i wp = _mm512_permutexvar_epi8(v, tpos), wn = _mm512_permutexvar_epi8(v, tneg);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        pos[i][j] = _mm512_dpbusd_epi32(pos[i][j], wp, x[i]);
        neg[i][j] = _mm512_dpbusd_epi32(neg[i][j], wn, x[i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      _mm512_storeu_si512(reinterpret_cast<void*>(g.acc + (r0 + i) * kCgPanel + 16 * j),
                          _mm512_sub_epi32(pos[i][j], neg[i][j]));
}

}  // namespace

void cg_int_avx512(const CgIntArgs& g) {
  if (g.layout == kCgINib) {
    switch (g.m) {
      case 1: nib_panel<1>(g); break;
      case 2: nib_panel<2>(g); break;
      case 3: nib_panel<3>(g); break;
      default: nib_panel<4>(g); break;
    }
    return;
  }
  // Two accumulators per output: at most 2 rows per pass (the second pass reads the panel from cache).
  for (int r0 = 0; r0 < g.m; r0 += 2) {
    if (g.m - r0 >= 2) split_panel<2>(g, r0);
    else split_panel<1>(g, r0);
  }
}

void cg_quantize_avx512(const float* x, int64_t n, float scale, int zp, uint8_t flip, uint8_t* out) {
  // Same operations as the scalar version (quantize_one), then the flip.
  const __m512 vs = _mm512_set1_ps(scale), vz = _mm512_set1_ps(static_cast<float>(zp));
  const __m512i vf = _mm512_set1_epi32(flip);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mk = avx512::tail_mask(n - i);
    const __m512i q = avx512::quantize16(_mm512_maskz_loadu_ps(mk, x + i), vs, vz);
    avx512::store16_u8(out + i, mk, _mm512_xor_si512(q, vf));
  }
}

}  // namespace inq
