// AVX-512 (F/BW/VL/DQ) float-mode panel kernel of the code GEMV: decodes 64 codes per depth step in registers
// and FMAs them into up to 4 rows x 4 zmm accumulators. Only this file is compiled with these ISA flags and it
// includes no library header with inline code (see sgemm_avx2.cc).
// GCC 12 reports the deliberately undefined source operand inside some intrinsics (_mm512_undefined_*) as
// uninitialized; the warning is a known false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/code_gemv_kernels.h"

namespace inq {
namespace {

// 16 codes (bytes) at p -> 16 floats.
template <int L>
inline __m512 decode16(const uint8_t* p, __m512 t0, __m512 t1, __m512i bias) {
  if (L == kCgB5) {
    // 5-bit index into the 32-entry table t0:t1 (upper bits of each dword ignored).
    const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm512_permutex2var_ps(t0, x, t1);
  } else {
    // code = s << 7 | m: sign-extend, so x << 23 has s in bits 31 and 30 and m in bits 23..29; drop bit 30 and
    // add the exponent bias -> +-2^(m - 1 - c); m = 0 -> 0 through the zero mask.
    (void)t0, (void)t1;
    const __m512i x = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __mmask16 nz = _mm512_test_epi32_mask(x, _mm512_set1_epi32(0x7F));
    const __m512i e = _mm512_and_si512(_mm512_slli_epi32(x, 23), _mm512_set1_epi32(static_cast<int>(0xBF800000u)));
    return _mm512_castsi512_ps(_mm512_maskz_add_epi32(nz, e, bias));
  }
}

template <int M, int L>
void panel(const CgFloatArgs& g) {
  __m512 acc[M][4];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  const __m512 t0 = _mm512_loadu_ps(g.table), t1 = _mm512_loadu_ps(g.table + 16);
  const __m512i bias = _mm512_set1_epi32(g.exp_bias << 23);
  const uint8_t* p = g.codes;
  const float* a = g.a;
  const int64_t lda = g.lda;
  constexpr int kRow = L == kCgNib ? 32 : 64;
  for (int64_t k = 0; k < g.k; ++k, p += kRow) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 16 * kRow), _MM_HINT_T0);
    __m512 w[4];
    if (L == kCgNib) {
      // 4-bit index: vpermps uses the low 4 bits of each dword, so the high nibble only needs a shift.
      const __m512i x0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      const __m512i x1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
      w[0] = _mm512_permutexvar_ps(x0, t0);
      w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(x0, 4), t0);
      w[2] = _mm512_permutexvar_ps(x1, t0);
      w[3] = _mm512_permutexvar_ps(_mm512_srli_epi32(x1, 4), t0);
    } else {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) w[j] = decode16<L>(p + 16 * j, t0, t1, bias);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * lda + k]);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_fmadd_ps(ai, w[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(g.acc + i * kCgPanel + 16 * j, acc[i][j]);
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

void cg_float_avx512(const CgFloatArgs& g) {
  switch (g.layout) {
    case kCgNib: by_rows<kCgNib>(g); break;
    case kCgB5: by_rows<kCgB5>(g); break;
    default: by_rows<kCgB8>(g); break;
  }
}

}  // namespace inq
