// AVX2 + FMA 6x16 micro-kernel (this file alone is compiled with -mavx2 -mfma; it holds no inline library code
// so no AVX2 instruction can leak into code shared with other translation units).
#include <immintrin.h>

#include "kernels/microkernel.h"
#include "kernels/winograd_tiles.h"

namespace inq {
namespace {

constexpr int kMr = 6;
constexpr int kNr = 16;

void kernel_avx2(int64_t kc, const float* a, const float* b, const int64_t* b_offsets, float* c, int64_t ldc,
                 float alpha, const float* bias, int accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t d = 0; d < kc; ++d, a += kMr) {
    const float* brow = b_offsets ? b + b_offsets[d] : b + d * kNr;
    const __m256 b0 = _mm256_loadu_ps(brow);
    const __m256 b1 = _mm256_loadu_ps(brow + 8);
    __m256 ai;
    ai = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 va = _mm256_set1_ps(alpha);
  const bool scale = alpha != 1.0f;
  auto store = [&](int i, __m256 lo, __m256 hi) {
    float* row = c + i * ldc;
    if (scale) { lo = _mm256_mul_ps(lo, va); hi = _mm256_mul_ps(hi, va); }
    __m256 init_lo, init_hi;
    if (accumulate) {
      init_lo = _mm256_loadu_ps(row);
      init_hi = _mm256_loadu_ps(row + 8);
    } else {
      init_lo = init_hi = _mm256_set1_ps(bias ? bias[i] : 0.0f);
    }
    _mm256_storeu_ps(row, _mm256_add_ps(init_lo, lo));
    _mm256_storeu_ps(row + 8, _mm256_add_ps(init_hi, hi));
  };
  store(0, c00, c01); store(1, c10, c11); store(2, c20, c21);
  store(3, c30, c31); store(4, c40, c41); store(5, c50, c51);
}

}  // namespace

extern const MicroKernel kAvx2Kernel;
const MicroKernel kAvx2Kernel = {kMr,    kNr, kernel_avx2, "avx2", 0, {}, nullptr, nullptr, {}, nullptr,
                                 winograd_tiles()};

}  // namespace inq
