// AVX-512 helpers shared by the integer kernels: partial-vector masks, uint8 codes and their stores. Include
// only from files built with -mavx512f -mavx512bw -mavx512vl (see CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace inq {
namespace avx512 {

// Lanes of a 16-lane group with `left` values to go (any sign).
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}

// saturated_code (kernels/quantize.h) of 16 quotients: round half to even, + zp, clamp to [0, 255] (NaN -> 0).
inline __m512i codes16(__m512 quotient, __m512 zpf) {
  __m512 f = _mm512_roundscale_ps(quotient, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm512_add_ps(f, zpf);
  f = _mm512_max_ps(f, _mm512_setzero_ps());  // f > 0 ? f : 0 (NaN -> 0)
  f = _mm512_min_ps(f, _mm512_set1_ps(255.0f));
  return _mm512_cvttps_epi32(f);
}

// quantize_one (kernels/quantize.h) of 16 values: the IEEE division, then codes16.
inline __m512i quantize16(__m512 x, __m512 scale, __m512 zpf) { return codes16(_mm512_div_ps(x, scale), zpf); }

// The low bytes of 16 int32 lanes to y[0..15] (the lanes of m): narrowed in a register, then one plain or
// byte-masked store. vpmovdb's own masked store to memory is far slower on Zen 4 (it dominated the rescale).
inline void store16_u8(uint8_t* y, __mmask16 m, __m512i v) {
  const __m128i b = _mm512_cvtepi32_epi8(v);
  if (m == 0xFFFF) _mm_storeu_si128(reinterpret_cast<__m128i*>(y), b);
  else _mm_mask_storeu_epi8(y, m, b);
}

}  // namespace avx512
}  // namespace inq
