// AVX-512F depthwise convolution of one channel plane (DepthwisePlaneFn, see microkernel.h).
//
// The zero-padded plane is first copied into sh x sw phase planes (stride 2 columns de-interleaved with
// permutes), so that every tap of a run of 16 consecutive outputs of one output row reads 16 consecutive floats
// of one phase plane. Output rows are then computed in vectors of 16 (masked at the row end), several vectors
// at a time for independent FMA chains, with bias, summand and clamp applied before the one store.
// Only this file is compiled with -mavx512f -mfma (no inline library code, see sgemm_avx2.cc).
#include <immintrin.h>

#include "kernels/microkernel.h"

namespace inq {
namespace {

inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0)
                                                           : static_cast<__mmask16>((1u << n) - 1u);
}

// Lanes [lo, hi) of 16 (empty when hi <= lo).
inline __mmask16 lane_range(int64_t lo, int64_t hi) {
  if (lo < 0) lo = 0;
  if (hi > 16) hi = 16;
  return hi <= lo ? static_cast<__mmask16>(0) : static_cast<__mmask16>(first_lanes(hi) & ~first_lanes(lo));
}

// Masked load that never forms an address outside [src, src + w) for the lanes it reads: lanes are read from
// src + s + t for t in the mask only.
inline __m512 load_range(const float* src, int64_t w, int64_t s) {
  if (s >= 0 && s + 16 <= w) return _mm512_loadu_ps(src + s);
  const __mmask16 m = lane_range(-s, w - s);
  if (!m) return _mm512_setzero_ps();
  // Shift the base into the row so that the pointer stays inside it; realign lanes with an expand.
  if (s >= 0) return _mm512_maskz_loadu_ps(m, src + s);
  // s < 0: lanes t >= -s read src[0 ...]; load from src and move the values up by -s lanes.
  const __mmask16 lm = first_lanes(16 + s < w ? 16 + s : w);
  return _mm512_maskz_expand_ps(m, _mm512_maskz_loadu_ps(lm, src));
}

// dst[j] = src[j + off] for j < n (0 outside [0, w)).
void fill_row_s1(const float* src, int64_t w, int64_t off, float* dst, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) _mm512_mask_storeu_ps(dst + j, first_lanes(n - j), load_range(src, w, j + off));
}

// dst0[j] = src[2j + off], dst1[j] = src[2j + 1 + off] for j < n (0 outside [0, w)).
void fill_row_s2(const float* src, int64_t w, int64_t off, float* dst0, float* dst1, int64_t n) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t s = 2 * j + off;
    const __m512 lo = load_range(src, w, s), hi = load_range(src, w, s + 16);
    const __mmask16 m = first_lanes(n - j);
    _mm512_mask_storeu_ps(dst0 + j, m, _mm512_permutex2var_ps(lo, even, hi));
    _mm512_mask_storeu_ps(dst1 + j, m, _mm512_permutex2var_ps(lo, odd, hi));
  }
}

void zero_row(float* dst, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) _mm512_mask_storeu_ps(dst + j, first_lanes(n - j), _mm512_setzero_ps());
}

constexpr int kMaxTaps = kDepthwiseMaxTaps;

struct Plan {
  const DepthwisePlaneArgs* a;
  int64_t wph, nv, ntaps;
  int64_t off[kMaxTaps];
  float wt[kMaxTaps];
};

// U output vectors starting at job j0 (job = output row oh, vector v of that row).
template <int U>
inline void run_jobs(const Plan& p, int64_t j0) {
  const DepthwisePlaneArgs& a = *p.a;
  int64_t src[U], dst[U];
  __mmask16 m[U];
  __m512 acc[U];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    const int64_t oh = (j0 + u) / p.nv, c = (j0 + u) % p.nv * 16;
    src[u] = oh * p.wph + c;
    dst[u] = oh * a.ow + c;
    m[u] = first_lanes(a.ow - c);
    acc[u] = _mm512_set1_ps(a.bias);
  }
  for (int64_t t = 0; t < p.ntaps; ++t) {
    const __m512 wv = _mm512_set1_ps(p.wt[t]);
    const float* base = a.scratch + p.off[t];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) acc[u] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m[u], base + src[u]), acc[u]);
  }
  const __m512 lo = _mm512_set1_ps(a.lo), hi = _mm512_set1_ps(a.hi);
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    __m512 v = acc[u];
    if (a.summand) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[u], a.summand + dst[u]));
    // max/min return their second operand when either is NaN: NaN sums stay NaN, as in finish_rows.
    v = _mm512_maskz_min_ps(0xFFFF, hi, _mm512_maskz_max_ps(0xFFFF, lo, v));  // maskz: no GCC 12 -Wmaybe-uninitialized
    _mm512_mask_storeu_ps(a.y + dst[u], m[u], v);
  }
}

// 3x3 with stride S (1 or 2), no dilation, straight from x (no padded copy): R output rows from oh0, 16 output
// columns from c (lanes m). Each input row is loaded once per column block and feeds every output row and tap
// that reads it; padding is handled by masked loads (never touching memory outside x) and skipped rows.
template <int S, int R>
inline void direct_rows(const DepthwisePlaneArgs& a, const __m512* wv, int64_t oh0, int64_t c, __mmask16 m,
                        const __mmask16* lm) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  __m512 acc[R];
#pragma GCC unroll 8
  for (int u = 0; u < R; ++u) acc[u] = _mm512_set1_ps(a.bias);
  const int64_t s0 = c * S - a.pad_l;  // input column of tap kj = 0 at output column c
  constexpr int kRows = (R - 1) * S + 3;
#pragma GCC unroll 16
  for (int ir = 0; ir < kRows; ++ir) {
    const int64_t ih = (oh0 * S - a.pad_t) + ir;
    if (ih < 0 || ih >= a.h) continue;
    const float* row = a.x + ih * a.w_in + s0;
    __m512 t[3];
    if (S == 1) {
#pragma GCC unroll 3
      for (int kj = 0; kj < 3; ++kj) t[kj] = _mm512_maskz_loadu_ps(lm[kj], row + kj);
    } else {
      const __m512 l0 = _mm512_maskz_loadu_ps(lm[0], row), l1 = _mm512_maskz_loadu_ps(lm[1], row + 16);
      const __m512 l2 = _mm512_maskz_loadu_ps(lm[2], row + 2), l3 = _mm512_maskz_loadu_ps(lm[3], row + 18);
      t[0] = _mm512_permutex2var_ps(l0, even, l1);
      t[1] = _mm512_permutex2var_ps(l0, odd, l1);
      t[2] = _mm512_permutex2var_ps(l2, even, l3);
    }
#pragma GCC unroll 3
    for (int ki = 0; ki < 3; ++ki) {
      // Output row u reads input row u * S + ki.
      if ((ir - ki) % S != 0) continue;
      const int u = (ir - ki) / S;
      if (ir < ki || u >= R) continue;
#pragma GCC unroll 3
      for (int kj = 0; kj < 3; ++kj) acc[u] = _mm512_fmadd_ps(wv[ki * 3 + kj], t[kj], acc[u]);
    }
  }
  const __m512 lo = _mm512_set1_ps(a.lo), hi = _mm512_set1_ps(a.hi);
#pragma GCC unroll 8
  for (int u = 0; u < R; ++u) {
    const int64_t at = (oh0 + u) * a.ow + c;
    __m512 v = acc[u];
    if (a.summand) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a.summand + at));
    // max/min return their second operand when either is NaN: NaN sums stay NaN, as in finish_rows.
    v = _mm512_maskz_min_ps(0xFFFF, hi, _mm512_maskz_max_ps(0xFFFF, lo, v));  // maskz: no GCC 12 -Wmaybe-uninitialized
    _mm512_mask_storeu_ps(a.y + at, m, v);
  }
}

template <int S>
void direct_plane(const DepthwisePlaneArgs& a) {
  __m512 wv[9];
  for (int t = 0; t < 9; ++t) wv[t] = _mm512_set1_ps(a.w[t]);
  for (int64_t c = 0; c < a.ow; c += 16) {
    const __mmask16 m = first_lanes(a.ow - c);
    // Loads of each input row: lanes whose input column lies inside [0, w), and only for used outputs.
    const int64_t s0 = c * S - a.pad_l;
    __mmask16 lm[4];
    if (S == 1) {
      for (int kj = 0; kj < 3; ++kj) lm[kj] = lane_range(-(s0 + kj), a.w_in - (s0 + kj)) & m;
    } else {
      // l0 / l1 hold columns s0 + [0, 32), l2 / l3 columns s0 + 2 + [0, 32); output lane i uses 2i and 2i + 1.
      const int64_t used = 2 * (a.ow - c < 16 ? a.ow - c : 16);
      for (int k = 0; k < 4; ++k) {
        const int64_t first = s0 + (k & 1) * 16 + (k >> 1) * 2;
        const int64_t lane0 = (k & 1) * 16;
        lm[k] = lane_range(-first, a.w_in - first) & lane_range(0, used - lane0);
      }
    }
    int64_t oh = 0;
    for (; oh + 4 <= a.oh; oh += 4) direct_rows<S, 4>(a, wv, oh, c, m, lm);
    if (oh + 2 <= a.oh) direct_rows<S, 2>(a, wv, oh, c, m, lm), oh += 2;
    if (oh < a.oh) direct_rows<S, 1>(a, wv, oh, c, m, lm);
  }
}

}  // namespace

void depthwise_plane_avx512(const DepthwisePlaneArgs& a) {
  const int64_t hph = depthwise_phase_rows(a.oh, a.kh, a.sh, a.dh);
  const int64_t wph = depthwise_phase_rows(a.ow, a.kw, a.sw, a.dw);
  const int64_t pplane = hph * wph;
  if (a.kh == 3 && a.kw == 3 && a.dh == 1 && a.dw == 1 && a.sh == a.sw && (a.sh == 1 || a.sh == 2)) {
    if (a.sh == 1) return direct_plane<1>(a);
    return direct_plane<2>(a);
  }
  // Phase planes.
  for (int64_t ph = 0; ph < a.sh; ++ph)
    for (int64_t i = 0; i < hph; ++i) {
      const int64_t ih = i * a.sh + ph - a.pad_t;
      float* row0 = a.scratch + ph * a.sw * pplane + i * wph;  // phase (ph, 0)
      if (ih < 0 || ih >= a.h) {
        for (int64_t b = 0; b < a.sw; ++b) zero_row(row0 + b * pplane, wph);
        continue;
      }
      const float* src = a.x + ih * a.w_in;
      if (a.sw == 1) {
        fill_row_s1(src, a.w_in, -a.pad_l, row0, wph);
      } else if (a.sw == 2) {
        fill_row_s2(src, a.w_in, -a.pad_l, row0, row0 + pplane, wph);
      } else {
        for (int64_t b = 0; b < a.sw; ++b)
          for (int64_t j = 0; j < wph; ++j) {
            const int64_t iw = j * a.sw + b - a.pad_l;
            row0[b * pplane + j] = iw >= 0 && iw < a.w_in ? src[iw] : 0.0f;
          }
      }
    }
  Plan p;
  p.a = &a;
  p.wph = wph;
  p.nv = (a.ow + 15) / 16;
  p.ntaps = a.kh * a.kw;
  for (int64_t ki = 0, t = 0; ki < a.kh; ++ki)
    for (int64_t kj = 0; kj < a.kw; ++kj, ++t) {
      const int64_t r = ki * a.dh, q = kj * a.dw;
      p.off[t] = ((r % a.sh) * a.sw + q % a.sw) * pplane + (r / a.sh) * wph + q / a.sw;
      p.wt[t] = a.w[t];
    }
  const int64_t jobs = a.oh * p.nv;
  int64_t j = 0;
  for (; j + 4 <= jobs; j += 4) run_jobs<4>(p, j);
  for (; j < jobs; ++j) run_jobs<1>(p, j);
}

}  // namespace inq
