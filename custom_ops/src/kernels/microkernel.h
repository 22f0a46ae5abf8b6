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
};

}  // namespace inq
