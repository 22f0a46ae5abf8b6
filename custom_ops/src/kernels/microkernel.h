// Micro-kernel descriptor shared by the GEMM driver and the per-ISA kernel files (kept free of library headers).
#pragma once

#include <cstdint>

namespace inq {

// c[i*ldc + j] (i < mr, j < nr) = (accumulate ? c : (bias ? bias[i] : 0)) + alpha * sum_d a[d*mr+i] * B(d, j)
// with B(d, j) = b[d*nr + j] (packed panel) or, when b_offsets is set, b[b_offsets[d] + j] (rows read in place).
using MicroKernelFn = void (*)(int64_t kc, const float* a, const float* b, const int64_t* b_offsets, float* c,
                               int64_t ldc, float alpha, const float* bias, int accumulate);

struct MicroKernel {
  int mr;
  int nr;
  MicroKernelFn fn;
  const char* name;
  // Optional variants for edge tiles: edge[r - 1][v - 1] computes only r rows x v * vector columns of the same
  // panels (A panels still mr wide, B rows still nr apart), so that a GEMM with 49 rows or columns does not pay
  // for 56 or 96. Null entries fall back to `fn`.
  int vector = 0;
  MicroKernelFn edge[8][4] = {};

  // The variant that covers `rows` x `columns` (at most mr x nr) with the least work.
  MicroKernelFn for_tile(int64_t rows, int64_t columns) const {
    if (vector > 0 && rows >= 1 && rows <= 8) {
      const int64_t v = (columns + vector - 1) / vector;
      if (v >= 1 && v <= 4 && v * vector <= nr && edge[rows - 1][v - 1]) return edge[rows - 1][v - 1];
    }
    return fn;
  }
};

}  // namespace inq
