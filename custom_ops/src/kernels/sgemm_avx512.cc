// AVX-512F micro-kernels, R rows x V zmm of columns (R <= 8, V <= 3: up to 8 x 48). The 8x48 one is the main
// kernel; the smaller ones compute edge tiles exactly, so that a GEMM with 49 rows or columns does not pay for
// 56 or 96.
// Only this file is compiled with -mavx512f -mfma (no inline library code here, see sgemm_avx2.cc).
#include <immintrin.h>

#include "kernels/microkernel.h"

namespace inq {
namespace {

constexpr int kMr = 8;
constexpr int kNr = 48;  // panel width of packed B: every variant reads rows of this stride

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
    if (!b_offsets) _mm_prefetch(reinterpret_cast<const char*>(brow + 8 * kNr), _MM_HINT_T0);
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
  int count[3] = {0, 0, 0};
  for (int p = 0; p < npieces; ++p) ++count[pieces[p].vec];
  const GatherPiece* p0 = pieces;
  const GatherPiece* p1 = p0 + count[0];
  const GatherPiece* p2 = p1 + count[1];
  if (count[0] == 1 && count[1] == 1 && count[2] == 1 && p0->mask == 0xFFFFu && p1->mask == 0xFFFFu &&
      p2->mask == 0xFFFFu && p0->delta == p1->delta && p1->delta == p2->delta) {  // one contiguous run
    const int64_t delta = p0->delta;
    for (int64_t d = 0; d < dn; ++d, dst += kNr) {
      const float* src = base + offsets[d] + delta;
      _mm512_store_ps(dst, _mm512_loadu_ps(src));
      _mm512_store_ps(dst + 16, _mm512_loadu_ps(src + 16));
      _mm512_store_ps(dst + 32, _mm512_loadu_ps(src + 32));
    }
    return;
  }
  for (int64_t d = 0; d < dn; ++d, dst += kNr) {
    const float* src = base + offsets[d];
    __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps(), v2 = _mm512_setzero_ps();
    for (int i = 0; i < count[0]; ++i)
      v0 = _mm512_mask_loadu_ps(v0, static_cast<__mmask16>(p0[i].mask), src + p0[i].delta);
    for (int i = 0; i < count[1]; ++i)
      v1 = _mm512_mask_loadu_ps(v1, static_cast<__mmask16>(p1[i].mask), src + p1[i].delta + 16);
    for (int i = 0; i < count[2]; ++i)
      v2 = _mm512_mask_loadu_ps(v2, static_cast<__mmask16>(p2[i].mask), src + p2[i].delta + 32);
    _mm512_store_ps(dst, v0);
    _mm512_store_ps(dst + 16, v1);
    _mm512_store_ps(dst + 32, v2);
  }
}

}  // namespace

// depthwise_avx512.cc
void depthwise_plane_avx512(const DepthwisePlaneArgs& args);

#define INQ_EDGE_ROW(r) {kernel_avx512<r, 1>, kernel_avx512<r, 2>, kernel_avx512<r, 3>, nullptr}

extern const MicroKernel kAvx512Kernel;
const MicroKernel kAvx512Kernel = {kMr, kNr, kernel_avx512<kMr, 3>, "avx512", 16,
                                   {INQ_EDGE_ROW(1), INQ_EDGE_ROW(2), INQ_EDGE_ROW(3), INQ_EDGE_ROW(4),
                                    INQ_EDGE_ROW(5), INQ_EDGE_ROW(6), INQ_EDGE_ROW(7), INQ_EDGE_ROW(8)},
                                   depthwise_plane_avx512, gather_panel_avx512};
#undef INQ_EDGE_ROW

}  // namespace inq
