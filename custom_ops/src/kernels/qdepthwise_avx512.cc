// AVX-512 direct-path kernels (QDwArgs, qkernels.h). Built with -mavx512f -mavx512bw -mavx512vl -mfma
// -ffp-contract=off; only called after run-time detection. The tap sums use FMA: every product and partial sum
// is an integer below 2^24, so they are exact in any form; the rescale is unfused, as QKernels::epilogue.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's own AVX-512 headers trip these (_mm512_undefined_* in masked intrinsics, GCC PR105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/avx512_lanes.h"
#include "kernels/qkernels.h"

namespace inq {
namespace {

using avx512::tail_mask;

// float(q(x)) - zp, the operations of quantize_one.
struct CenteredQuantizer {
  __m512 scale, zpf;
  CenteredQuantizer(float s, int32_t zp) : scale(_mm512_set1_ps(s)), zpf(_mm512_set1_ps(static_cast<float>(zp))) {}
  __m512 operator()(__m512 x) const {
    __m512 f = _mm512_roundscale_ps(_mm512_div_ps(x, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm512_add_ps(f, zpf);
    f = _mm512_max_ps(f, _mm512_setzero_ps());  // f > 0 ? f : 0 (NaN -> 0)
    f = _mm512_min_ps(f, _mm512_set1_ps(255.0f));
    return _mm512_sub_ps(f, zpf);
  }
};

}  // namespace

void dw_quantize_avx512(const float* x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, float scale, int32_t zp,
                        float* const* dst, int64_t ldd) {
  const CenteredQuantizer quantize_centered(scale, zp);
  if (sw == 1) {
    if (!dst[0]) return;
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = x + r * ldx;
      float* d = dst[0] + r * ldd;
      int64_t j = 0;
      for (; j + 16 <= n; j += 16) _mm512_storeu_ps(d + j, quantize_centered(_mm512_loadu_ps(s + j)));
      if (j < n) {
        const __mmask16 m = tail_mask(n - j);
        _mm512_mask_storeu_ps(d + j, m, quantize_centered(_mm512_maskz_loadu_ps(m, s + j)));
      }
    }
    return;
  }
  if (sw == 2) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = x + r * ldx;
      float* d0 = dst[0] ? dst[0] + r * ldd : nullptr;
      float* d1 = dst[1] ? dst[1] + r * ldd : nullptr;
      for (int64_t j = 0; j < n; j += 32) {
        const int64_t rem = n - j;
        const __m512 a = quantize_centered(_mm512_maskz_loadu_ps(tail_mask(rem), s + j));
        const __m512 b = quantize_centered(_mm512_maskz_loadu_ps(tail_mask(rem - 16), s + j + 16));
        if (d0) _mm512_mask_storeu_ps(d0 + j / 2, tail_mask((rem + 1) / 2), _mm512_permutex2var_ps(a, even, b));
        if (d1) _mm512_mask_storeu_ps(d1 + j / 2, tail_mask(rem / 2), _mm512_permutex2var_ps(a, odd, b));
      }
    }
    return;
  }
  dw_quantize_generic(x, rows, n, ldx, sw, scale, zp, dst, ldd);
}

namespace {

inline __m512 rescale(__m512 acc, const QDwArgs& a, __m512 mult, __m512 bias, __m512 lo, __m512 hi, int64_t at,
                      __mmask16 m) {
  __m512 v = _mm512_mul_ps(acc, mult);
  if (a.has_bias) v = _mm512_add_ps(v, bias);
  if (a.summand) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a.summand + at));
  v = _mm512_max_ps(lo, v);  // v < lo ? lo : v, as std::max(v, lo)
  return _mm512_min_ps(hi, v);  // hi < v ? hi : v, as std::min(v, hi)
}

// Dense 3x3, unit stride: R output rows x V segments of 16 columns. Each input row vector is loaded once and
// feeds the (up to three) output rows that read it: (R + 2) * 3 loads per 9 * R FMAs and segment.
template <int R, int V>
inline void dense3_block(const QDwArgs& a, const __m512 (&w)[9], int64_t r0, int64_t c0, const __mmask16 (&m)[2],
                         __m512 mult, __m512 bias, __m512 lo, __m512 hi) {
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* base = a.plane + a.off[0] + r0 * a.row_step + c0;
#pragma GCC unroll 10
  for (int j = 0; j < R + 2; ++j) {
#pragma GCC unroll 3
    for (int kj = 0; kj < 3; ++kj) {
      __m512 x[V];
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) x[v] = _mm512_maskz_loadu_ps(m[v], base + j * a.row_step + kj + 16 * v);
#pragma GCC unroll 3
      for (int ki = 0; ki < 3; ++ki) {
        const int r = j - ki;
        if (r < 0 || r >= R) continue;
#pragma GCC unroll 2
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(x[v], w[3 * ki + kj], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      const int64_t at = (r0 + r) * a.cols + c0 + 16 * v;
      _mm512_mask_storeu_ps(a.y + at, m[v], rescale(acc[r][v], a, mult, bias, lo, hi, at, m[v]));
    }
}

template <int R, int V>
inline void dense3_rows(const QDwArgs& a, const __m512 (&w)[9], int64_t c0, const __mmask16 (&m)[2], __m512 mult,
                        __m512 bias, __m512 lo, __m512 hi) {
  int64_t r0 = 0;
  for (; r0 + R <= a.rows; r0 += R) dense3_block<R, V>(a, w, r0, c0, m, mult, bias, lo, hi);
  switch (a.rows - r0) {
    case 7: dense3_block<7 % R, V>(a, w, r0, c0, m, mult, bias, lo, hi); break;
    case 6: dense3_block<6 % R, V>(a, w, r0, c0, m, mult, bias, lo, hi); break;
    case 5: dense3_block<5 % R, V>(a, w, r0, c0, m, mult, bias, lo, hi); break;
    case 4: dense3_block<4 % R, V>(a, w, r0, c0, m, mult, bias, lo, hi); break;
    case 3: dense3_block<3 % R, V>(a, w, r0, c0, m, mult, bias, lo, hi); break;
    case 2: dense3_block<2 % R, V>(a, w, r0, c0, m, mult, bias, lo, hi); break;
    case 1: dense3_block<1, V>(a, w, r0, c0, m, mult, bias, lo, hi); break;
    default: break;
  }
}

void dense3(const QDwArgs& a, __m512 mult, __m512 bias, __m512 lo, __m512 hi) {
  __m512 w[9];
  for (int t = 0; t < 9; ++t) w[t] = _mm512_set1_ps(a.w[t]);
  for (int64_t c0 = 0; c0 < a.cols; c0 += 32) {
    const __mmask16 m[2] = {tail_mask(a.cols - c0), tail_mask(a.cols - c0 - 16)};
    if (a.cols - c0 > 16) dense3_rows<4, 2>(a, w, c0, m, mult, bias, lo, hi);
    else dense3_rows<8, 1>(a, w, c0, m, mult, bias, lo, hi);
  }
}

}  // namespace

void dw_conv_avx512(const QDwArgs& a) {
  // Segments of 16 output columns, row by row; four of them (possibly from several rows) at a time so that
  // four independent sums hide the FMA latency also on narrow rows.
  const int64_t per_row = (a.cols + 15) / 16, total = a.rows * per_row;
  const __m512 mult = _mm512_set1_ps(a.mult), bias = _mm512_set1_ps(a.bias);
  const __m512 lo = _mm512_set1_ps(a.lo), hi = _mm512_set1_ps(a.hi);
  if (a.shape == 3) return dense3(a, mult, bias, lo, hi);
  int64_t r = 0, s = 0;  // row and segment of segment i
  for (int64_t i = 0; i < total; i += 4) {
    int64_t in[4], out[4];
    __mmask16 m[4];
    for (int k = 0; k < 4; ++k) {
      if (i + k < total) {
        in[k] = r * a.row_step + 16 * s;
        out[k] = r * a.cols + 16 * s;
        m[k] = tail_mask(a.cols - 16 * s);
        if (++s == per_row) s = 0, ++r;
      } else {
        in[k] = out[k] = 0;
        m[k] = 0;
      }
    }
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    const int64_t taps = a.taps;
    const float* const plane = a.plane;
    if ((m[0] & m[1] & m[2] & m[3]) == 0xFFFF) {  // plain loads (folded into the FMAs) for whole segments
      const float *p0 = plane + in[0], *p1 = plane + in[1], *p2 = plane + in[2], *p3 = plane + in[3];
      for (int64_t t = 0; t < taps; ++t) {
        const __m512 w = _mm512_set1_ps(a.w[t]);
        const int64_t o = a.off[t];
        c0 = _mm512_fmadd_ps(_mm512_loadu_ps(p0 + o), w, c0);
        c1 = _mm512_fmadd_ps(_mm512_loadu_ps(p1 + o), w, c1);
        c2 = _mm512_fmadd_ps(_mm512_loadu_ps(p2 + o), w, c2);
        c3 = _mm512_fmadd_ps(_mm512_loadu_ps(p3 + o), w, c3);
      }
    } else {
      for (int64_t t = 0; t < taps; ++t) {
        const __m512 w = _mm512_set1_ps(a.w[t]);
        const float* p = plane + a.off[t];
        c0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[0], p + in[0]), w, c0);
        c1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[1], p + in[1]), w, c1);
        c2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[2], p + in[2]), w, c2);
        c3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[3], p + in[3]), w, c3);
      }
    }
    const __m512 acc[4] = {c0, c1, c2, c3};
    for (int k = 0; k < 4; ++k) {
      __m512 v = _mm512_mul_ps(acc[k], mult);
      if (a.has_bias) v = _mm512_add_ps(v, bias);
      if (a.summand) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[k], a.summand + out[k]));
      v = _mm512_max_ps(lo, v);  // v < lo ? lo : v, as std::max(v, lo)
      v = _mm512_min_ps(hi, v);  // hi < v ? hi : v, as std::min(v, hi)
      _mm512_mask_storeu_ps(a.y + out[k], m[k], v);
    }
  }
}

}  // namespace inq
