// AVX2 + FMA float-mode panel kernel of the code GEMV. 16 ymm registers do not hold 4 rows x 64 columns of
// accumulators, so the panel is processed in column chunks (32 columns for <= 2 rows, 16 for more; the later
// chunks re-read the panel from cache). Codes are decoded to floats by integer ops on the exponent field.
// Only this file is compiled with -mavx2 -mfma and it includes no library header with inline code.
// GCC 12 reports the deliberately undefined source operand inside some intrinsics (_mm512_undefined_*) as
// uninitialized; the warning is a known false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/code_gemv_kernels.h"

namespace inq {
namespace {

// 8 codes of columns [c, c + 8) of the panel row at p -> 8 floats.
template <int L>
inline __m256 decode8(const uint8_t* p, int c, __m256 t_lo, __m256 t_hi, __m256i bias) {
  if (L == kCgNib) {
    // Column 32g + 16h + j sits in byte 16g + j, nibble h. vpermps takes a 3-bit index: look up both halves of
    // the 16-entry table and pick by bit 3 (moved to the sign bit for blendv).
    const int g = c / 32, h = (c / 16) % 2, j = c % 16;
    __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 16 * g + j)));
    if (h) x = _mm256_srli_epi32(x, 4);
    const __m256 lo = _mm256_permutevar8x32_ps(t_lo, x), hi = _mm256_permutevar8x32_ps(t_hi, x);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(x, 28)));
  } else if (L == kCgB5) {
    // code = s << 4 | m: bits = s << 31 | (m + bias) << 23, 0 for m = 0.
    const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + c)));
    const __m256i m = _mm256_and_si256(x, _mm256_set1_epi32(15));
    const __m256i s = _mm256_and_si256(_mm256_slli_epi32(x, 27), _mm256_set1_epi32(static_cast<int>(0x80000000u)));
    const __m256i f = _mm256_or_si256(_mm256_add_epi32(_mm256_slli_epi32(m, 23), bias), s);
    return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpeq_epi32(m, _mm256_setzero_si256()), f));
  } else {
    // code = s << 7 | m, sign-extended: x << 23 has s in bits 31 and 30; drop bit 30, add the bias.
    const __m256i x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + c)));
    const __m256i m = _mm256_and_si256(x, _mm256_set1_epi32(0x7F));
    const __m256i e =
        _mm256_and_si256(_mm256_slli_epi32(x, 23), _mm256_set1_epi32(static_cast<int>(0xBF800000u)));
    const __m256i f = _mm256_add_epi32(e, bias);
    return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpeq_epi32(m, _mm256_setzero_si256()), f));
  }
}

// Rows [0, M) x columns [c0, c0 + 8V) of the panel.
template <int M, int V, int L>
void chunk(const CgFloatArgs& g, int c0) {
  __m256 acc[M][V];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) acc[i][j] = _mm256_setzero_ps();
  const __m256 t_lo = _mm256_loadu_ps(g.table), t_hi = _mm256_loadu_ps(g.table + 8);
  const __m256i bias = _mm256_set1_epi32(g.exp_bias << 23);
  constexpr int kRow = L == kCgNib ? 32 : 64;
  const uint8_t* p = g.codes;
  for (int64_t k = 0; k < g.k; ++k, p += kRow) {
    __m256 w[V];
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) w[j] = decode8<L>(p, c0 + 8 * j, t_lo, t_hi, bias);
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const __m256 ai = _mm256_broadcast_ss(g.a + i * g.lda + k);
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) acc[i][j] = _mm256_fmadd_ps(ai, w[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) _mm256_storeu_ps(g.acc + i * kCgPanel + c0 + 8 * j, acc[i][j]);
}

template <int M, int L>
void panel(const CgFloatArgs& g) {
  constexpr int V = M <= 2 ? 4 : 2;
  for (int c0 = 0; c0 < kCgPanel; c0 += 8 * V) chunk<M, V, L>(g, c0);
}

template <int L>
void by_rows(const CgFloatArgs& g) {
  switch (g.m) {
    case 1: panel<1, L>(g); break;
    case 2: panel<2, L>(g); break;
    case 3: panel<3, L>(g); break;
    default: panel<4, L>(g); break;
  }
}

}  // namespace

void cg_float_avx2(const CgFloatArgs& g) {
  switch (g.layout) {
    case kCgNib: by_rows<kCgNib>(g); break;
    case kCgB5: by_rows<kCgB5>(g); break;
    default: by_rows<kCgB8>(g); break;
  }
}

}  // namespace inq
