// AVX-512F micro-kernels, R rows x V zmm of columns (R <= 8, V <= 3: up to 8 x 48). The 8x48 one is the main
// kernel; the smaller ones compute edge tiles exactly, so that a GEMM with 49 rows or columns does not pay for
// 56 or 96.
// Only this file is compiled with -mavx512f -mfma (no inline library code here, see sgemm_avx2.cc).
#include <immintrin.h>

#include "kernels/microkernel.h"
#include "kernels/winograd_tiles.h"

namespace inq {
namespace {

constexpr int kMr = 8;
constexpr int kNr = 48;  // panel width of packed B: every variant reads rows of this stride
constexpr int kPrefetchRows = 8;  // packed B rows prefetched ahead

template <int R, int V>
void kernel_avx512(int64_t kc, const float* a, const float* b, const int64_t* b_offsets, float* c, int64_t ldc,
                   float alpha, const float* bias, int accumulate) {
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t d = 0; d < kc; ++d, a += kMr) {
    const float* brow = b_offsets ? b + b_offsets[d] : b + d * kNr;
    _mm_prefetch(reinterpret_cast<const char*>(a + 32 * kMr), _MM_HINT_T0);
    if (!b_offsets) {
      _mm_prefetch(reinterpret_cast<const char*>(brow + kPrefetchRows * kNr), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(brow + kPrefetchRows * kNr + 16), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(brow + kPrefetchRows * kNr + 32), _MM_HINT_T0);
    }
    __m512 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(brow + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  const bool scale = alpha != 1.0f;
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    float* row = c + i * ldc;
    const __m512 init = _mm512_set1_ps(bias ? bias[i] : 0.0f);
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) {
      const __m512 x = scale ? _mm512_mul_ps(acc[i][v], va) : acc[i][v];
      _mm512_storeu_ps(row + 16 * v, _mm512_add_ps(accumulate ? _mm512_loadu_ps(row + 16 * v) : init, x));
    }
  }
}

// R rows x V vectors with A read in place (rows of a padded image plane) through per-depth offsets.
template <int R, int V>
void kernel_a_in_place(int64_t kc, const float* a, const int64_t* a_offsets, const float* b, float* c, int64_t ldc,
                       int accumulate, const float* prefetch, int64_t prefetch_lines) {
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t d = 0; d < kc; ++d, b += kNr) {
    const float* arow = a + a_offsets[d];
    if (d < prefetch_lines) _mm_prefetch(reinterpret_cast<const char*>(prefetch + 16 * d), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchRows * kNr), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchRows * kNr + 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchRows * kNr + 32), _MM_HINT_T0);
    __m512 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 ai = _mm512_set1_ps(arow[i]);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    float* row = c + i * ldc;
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v)
      _mm512_storeu_ps(row + 16 * v, accumulate ? _mm512_add_ps(_mm512_loadu_ps(row + 16 * v), acc[i][v]) : acc[i][v]);
  }
}

// K pieces per vector, unrolled: no branches in the row loop.
template <int K>
void gather_rows(const float* base, const int64_t* offsets, int64_t dn, const GatherPiece* pieces, float* dst) {
  __mmask16 mask[3][K];
  int64_t delta[3][K];
  for (int v = 0; v < 3; ++v)
    for (int i = 0; i < K; ++i) {
      mask[v][i] = static_cast<__mmask16>(pieces[v * K + i].mask);
      delta[v][i] = pieces[v * K + i].delta + 16 * v;
    }
  for (int64_t d = 0; d < dn; ++d, dst += kNr) {
    const float* src = base + offsets[d];
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      __m512 acc = _mm512_maskz_loadu_ps(mask[v][0], src + delta[v][0]);
#pragma GCC unroll 3
      for (int i = 1; i < K; ++i) acc = _mm512_mask_loadu_ps(acc, mask[v][i], src + delta[v][i]);
      _mm512_store_ps(dst + 16 * v, acc);
    }
  }
}

// B panel rows from output rows of a padded plane: per row d, the three vectors are assembled from masked loads
// (masked-off lanes are not read, so the addresses they would have may lie outside the source) and stored whole.
void gather_panel_avx512(const float* base, const int64_t* offsets, int64_t dn, const GatherPiece* pieces,
                         int npieces, int width, float* dst) {
  if (width != kNr) {  // not this kernel's panels: plain loop
    for (int64_t d = 0; d < dn; ++d) {
      const float* src = base + offsets[d];
      float* row = dst + d * width;
      for (int j = 0; j < width; ++j) row[j] = 0.0f;
      for (int p = 0; p < npieces; ++p)
        for (int l = 0; l < 16; ++l)
          if (pieces[p].mask >> l & 1u) row[16 * pieces[p].vec + l] = src[pieces[p].delta + 16 * pieces[p].vec + l];
    }
    return;
  }
  switch (npieces) {
    case 3: return gather_rows<1>(base, offsets, dn, pieces, dst);
    case 6: return gather_rows<2>(base, offsets, dn, pieces, dst);
    case 9: return gather_rows<3>(base, offsets, dn, pieces, dst);
    default: break;
  }
  const int per = npieces / 3;
  for (int64_t d = 0; d < dn; ++d, dst += kNr) {
    const float* src = base + offsets[d];
    for (int v = 0; v < 3; ++v) {
      __m512 acc = _mm512_setzero_ps();
      for (int i = v * per; i < (v + 1) * per; ++i)
        acc = _mm512_mask_loadu_ps(acc, static_cast<__mmask16>(pieces[i].mask), src + pieces[i].delta + 16 * v);
      _mm512_store_ps(dst + 16 * v, acc);
    }
  }
}

// GCC 12 warns about the undefined pass-through operand inside the unmasked forms of the intrinsics below: a
// false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// In-register transpose of a 16 x 16 block: r[i] lane j becomes r[j] lane i.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // Per 128-bit lane k, r[4q + e] now holds column 4k + e of rows 4q..4q+3.
#pragma GCC unroll 4
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int e = 0; e < 4; ++e) {
    t[e] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88);
    t[4 + e] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xDD);
    t[8 + e] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
    t[12 + e] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xDD);
  }
#pragma GCC unroll 4
  for (int e = 0; e < 4; ++e) {
    r[e] = _mm512_shuffle_f32x4(t[e], t[8 + e], 0x88);
    r[4 + e] = _mm512_shuffle_f32x4(t[4 + e], t[12 + e], 0x88);
    r[8 + e] = _mm512_shuffle_f32x4(t[e], t[8 + e], 0xDD);
    r[12 + e] = _mm512_shuffle_f32x4(t[4 + e], t[12 + e], 0xDD);
  }
}

inline int64_t at_most_16(int64_t n) { return n < 16 ? n : 16; }
inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// Blocks of 16 positions x 16 channels, transposed in registers, epilogue applied to whole channel vectors.
void store_transposed_avx512(const TransposedStoreArgs& s) {
  const __m512 lo = _mm512_set1_ps(s.lo), hi = _mm512_set1_ps(s.hi);
  const bool clamp = s.lo != -__builtin_inff() || s.hi != __builtin_inff();
  for (int64_t j0 = 0; j0 < s.channels; j0 += 16) {
    const int64_t jn = at_most_16(s.channels - j0);
    const __mmask16 jm = first_lanes(jn);
    for (int64_t p0 = 0; p0 < s.positions; p0 += 16) {
      const int64_t pn = at_most_16(s.positions - p0);
      const __mmask16 pm = first_lanes(pn);
      const float* src = s.c + p0 * s.ldc + j0;
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) r[i] = i < pn ? _mm512_maskz_loadu_ps(jm, src + i * s.ldc) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t j = 0; j < jn; ++j) {
        __m512 v = r[j];
        if (s.bias) v = _mm512_add_ps(v, _mm512_set1_ps(s.bias[j0 + j]));
        if (s.summand) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(pm, s.summand + (j0 + j) * s.ldz + p0));
        if (clamp) v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));  // operand order keeps NaN
        _mm512_mask_storeu_ps(s.y + (j0 + j) * s.ldy + p0, pm, v);
      }
    }
  }
}
#pragma GCC diagnostic pop

}  // namespace

// depthwise_avx512.cc
void depthwise_plane_avx512(const DepthwisePlaneArgs& args);

#define INQ_EDGE_ROW(r) {kernel_avx512<r, 1>, kernel_avx512<r, 2>, kernel_avx512<r, 3>, nullptr}
#define INQ_A_ROW(r) {kernel_a_in_place<r, 1>, kernel_a_in_place<r, 2>, kernel_a_in_place<r, 3>, nullptr}

extern const MicroKernel kAvx512Kernel;
const MicroKernel kAvx512Kernel = {kMr, kNr, kernel_avx512<kMr, 3>, "avx512", 16,
                                   {INQ_EDGE_ROW(1), INQ_EDGE_ROW(2), INQ_EDGE_ROW(3), INQ_EDGE_ROW(4),
                                    INQ_EDGE_ROW(5), INQ_EDGE_ROW(6), INQ_EDGE_ROW(7), INQ_EDGE_ROW(8)},
                                   depthwise_plane_avx512, gather_panel_avx512,
                                   {INQ_A_ROW(1), INQ_A_ROW(2), INQ_A_ROW(3), INQ_A_ROW(4), INQ_A_ROW(5), INQ_A_ROW(6),
                                    INQ_A_ROW(7), INQ_A_ROW(8)},
                                   store_transposed_avx512, winograd_tiles()};
#undef INQ_EDGE_ROW
#undef INQ_A_ROW

}  // namespace inq
