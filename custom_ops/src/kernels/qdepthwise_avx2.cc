// AVX2 direct-path kernels (QDwArgs, qkernels.h). Built with -mavx2 -mfma -ffp-contract=off; only called after
// run-time detection. The tap sums use FMA: every product and partial sum is an integer below 2^24, so they
// are exact in any form; the rescale is unfused, as QKernels::epilogue.
#include <immintrin.h>

#include "kernels/qkernels.h"

namespace inq {
namespace {

inline __m256i tail_mask(int64_t n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 8 ? (n > 0 ? n : 0) : 8)), iota);
}

// float(q(x)) - zp, the operations of quantize_one.
inline __m256 quantize_centered(__m256 x, __m256 scale, __m256 zpf) {
  __m256 f = _mm256_round_ps(_mm256_div_ps(x, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm256_add_ps(f, zpf);
  f = _mm256_max_ps(f, _mm256_setzero_ps());  // f > 0 ? f : 0 (NaN -> 0)
  f = _mm256_min_ps(f, _mm256_set1_ps(255.0f));
  return _mm256_sub_ps(f, zpf);
}

}  // namespace

void dw_quantize_avx2(const float* x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, float scale, int32_t zp,
                      float* const* dst, int64_t ldd) {
  const __m256 sv = _mm256_set1_ps(scale), zv = _mm256_set1_ps(static_cast<float>(zp));
  if (sw == 1) {
    if (!dst[0]) return;
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = x + r * ldx;
      float* d = dst[0] + r * ldd;
      int64_t j = 0;
      for (; j + 8 <= n; j += 8) _mm256_storeu_ps(d + j, quantize_centered(_mm256_loadu_ps(s + j), sv, zv));
      if (j < n) {
        const __m256i m = tail_mask(n - j);
        _mm256_maskstore_ps(d + j, m, quantize_centered(_mm256_maskload_ps(s + j, m), sv, zv));
      }
    }
    return;
  }
  if (sw == 2) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = x + r * ldx;
      float* d0 = dst[0] ? dst[0] + r * ldd : nullptr;
      float* d1 = dst[1] ? dst[1] + r * ldd : nullptr;
      int64_t j = 0;
      for (; j + 16 <= n; j += 16) {
        const __m256 a = quantize_centered(_mm256_loadu_ps(s + j), sv, zv);
        const __m256 b = quantize_centered(_mm256_loadu_ps(s + j + 8), sv, zv);
        // Per 128-bit lane (a0 a2 b0 b2 | a4 a6 b4 b6), then the 64-bit quarters reordered 0, 2, 1, 3.
        if (d0)
          _mm256_storeu_ps(d0 + j / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                           _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8)));
        if (d1)
          _mm256_storeu_ps(d1 + j / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                           _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8)));
      }
      if (j < n) {
        float* tail[2] = {d0 ? d0 + j / 2 : nullptr, d1 ? d1 + j / 2 : nullptr};
        dw_quantize_generic(s + j, 1, n - j, ldx, 2, scale, zp, tail, ldd);
      }
    }
    return;
  }
  dw_quantize_generic(x, rows, n, ldx, sw, scale, zp, dst, ldd);
}

void dw_conv_avx2(const QDwArgs& a) {
  // Segments of 8 output columns, row by row; four at a time (possibly from several rows).
  const int64_t per_row = (a.cols + 7) / 8, total = a.rows * per_row;
  const __m256 mult = _mm256_set1_ps(a.mult), bias = _mm256_set1_ps(a.bias);
  const __m256 lo = _mm256_set1_ps(a.lo), hi = _mm256_set1_ps(a.hi);
  int64_t r = 0, s = 0;
  for (int64_t i = 0; i < total; i += 4) {
    int64_t in[4], out[4];
    __m256i m[4];
    for (int k = 0; k < 4; ++k) {
      if (i + k < total) {
        in[k] = r * a.row_step + 8 * s;
        out[k] = r * a.cols + 8 * s;
        m[k] = tail_mask(a.cols - 8 * s);
        if (++s == per_row) s = 0, ++r;
      } else {
        in[k] = out[k] = 0;
        m[k] = _mm256_setzero_si256();
      }
    }
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t t = 0; t < a.taps; ++t) {
      const __m256 w = _mm256_set1_ps(a.w[t]);
      const float* p = a.plane + a.off[t];
      c0 = _mm256_fmadd_ps(_mm256_maskload_ps(p + in[0], m[0]), w, c0);
      c1 = _mm256_fmadd_ps(_mm256_maskload_ps(p + in[1], m[1]), w, c1);
      c2 = _mm256_fmadd_ps(_mm256_maskload_ps(p + in[2], m[2]), w, c2);
      c3 = _mm256_fmadd_ps(_mm256_maskload_ps(p + in[3], m[3]), w, c3);
    }
    const __m256 acc[4] = {c0, c1, c2, c3};
    for (int k = 0; k < 4; ++k) {
      __m256 v = _mm256_mul_ps(acc[k], mult);
      if (a.has_bias) v = _mm256_add_ps(v, bias);
      if (a.summand) v = _mm256_add_ps(v, _mm256_maskload_ps(a.summand + out[k], m[k]));
      v = _mm256_max_ps(lo, v);  // v < lo ? lo : v, as std::max(v, lo)
      v = _mm256_min_ps(hi, v);  // hi < v ? hi : v, as std::min(v, hi)
      _mm256_maskstore_ps(a.y + out[k], m[k], v);
    }
  }
}

}  // namespace inq
