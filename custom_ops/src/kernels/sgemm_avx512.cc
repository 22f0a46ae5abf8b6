// AVX-512F 8x48 micro-kernel: 24 zmm accumulators, B rows in 3 zmm, A values as embedded broadcasts.
// Only this file is compiled with -mavx512f -mfma (no inline library code here, see sgemm_avx2.cc).
#include <immintrin.h>

#include "kernels/microkernel.h"

namespace inq {
namespace {

constexpr int kMr = 8;
constexpr int kNr = 48;

#define INQ_ROW(i)                                            \
  {                                                           \
    const __m512 ai = _mm512_set1_ps(a[i]);                   \
    c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);               \
    c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);               \
    c##i##2 = _mm512_fmadd_ps(ai, b2, c##i##2);               \
  }

void kernel_avx512(int64_t kc, const float* a, const float* b, const int64_t* b_offsets, float* c, int64_t ldc,
                   float alpha, const float* bias, int accumulate) {
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  __m512 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  __m512 c40 = c00, c41 = c00, c42 = c00, c50 = c00, c51 = c00, c52 = c00;
  __m512 c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;
  if (b_offsets) {  // rows read in place (implicit-GEMM convolution)
    for (int64_t d = 0; d < kc; ++d, a += kMr) {
      const float* brow = b + b_offsets[d];
      const __m512 b0 = _mm512_loadu_ps(brow);
      const __m512 b1 = _mm512_loadu_ps(brow + 16);
      const __m512 b2 = _mm512_loadu_ps(brow + 32);
      INQ_ROW(0) INQ_ROW(1) INQ_ROW(2) INQ_ROW(3) INQ_ROW(4) INQ_ROW(5) INQ_ROW(6) INQ_ROW(7)
    }
  } else {
    for (int64_t d = 0; d < kc; ++d, a += kMr, b += kNr) {
      _mm_prefetch(reinterpret_cast<const char*>(b + 8 * kNr), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(b + 8 * kNr + 16), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(b + 8 * kNr + 32), _MM_HINT_T0);
      const __m512 b0 = _mm512_loadu_ps(b);
      const __m512 b1 = _mm512_loadu_ps(b + 16);
      const __m512 b2 = _mm512_loadu_ps(b + 32);
      INQ_ROW(0) INQ_ROW(1) INQ_ROW(2) INQ_ROW(3) INQ_ROW(4) INQ_ROW(5) INQ_ROW(6) INQ_ROW(7)
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  const bool scale = alpha != 1.0f;
  auto store = [&](int i, __m512 x0, __m512 x1, __m512 x2) {
    float* row = c + i * ldc;
    if (scale) { x0 = _mm512_mul_ps(x0, va); x1 = _mm512_mul_ps(x1, va); x2 = _mm512_mul_ps(x2, va); }
    if (accumulate) {
      _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), x0));
      _mm512_storeu_ps(row + 16, _mm512_add_ps(_mm512_loadu_ps(row + 16), x1));
      _mm512_storeu_ps(row + 32, _mm512_add_ps(_mm512_loadu_ps(row + 32), x2));
    } else {
      const __m512 init = _mm512_set1_ps(bias ? bias[i] : 0.0f);
      _mm512_storeu_ps(row, _mm512_add_ps(init, x0));
      _mm512_storeu_ps(row + 16, _mm512_add_ps(init, x1));
      _mm512_storeu_ps(row + 32, _mm512_add_ps(init, x2));
    }
  };
  store(0, c00, c01, c02); store(1, c10, c11, c12); store(2, c20, c21, c22); store(3, c30, c31, c32);
  store(4, c40, c41, c42); store(5, c50, c51, c52); store(6, c60, c61, c62); store(7, c70, c71, c72);
}
#undef INQ_ROW

}  // namespace

extern const MicroKernel kAvx512Kernel;
const MicroKernel kAvx512Kernel = {kMr, kNr, kernel_avx512, "avx512"};

}  // namespace inq
