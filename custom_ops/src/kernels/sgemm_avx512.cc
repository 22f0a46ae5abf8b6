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

}  // namespace

#define INQ_EDGE_ROW(r) {kernel_avx512<r, 1>, kernel_avx512<r, 2>, kernel_avx512<r, 3>, nullptr}

extern const MicroKernel kAvx512Kernel;
const MicroKernel kAvx512Kernel = {kMr, kNr, kernel_avx512<kMr, 3>, "avx512", 16,
                                   {INQ_EDGE_ROW(1), INQ_EDGE_ROW(2), INQ_EDGE_ROW(3), INQ_EDGE_ROW(4),
                                    INQ_EDGE_ROW(5), INQ_EDGE_ROW(6), INQ_EDGE_ROW(7), INQ_EDGE_ROW(8)}};
#undef INQ_EDGE_ROW

}  // namespace inq
