// Portable 4x16 micro-kernel (plain C++; the compiler vectorizes it for the baseline ISA).
#include "kernels/microkernel.h"

namespace inq {
namespace {

constexpr int kMr = 4;
constexpr int kNr = 16;

void kernel_generic(int64_t kc, const float* a, const float* b, const int64_t* b_offsets, float* c, int64_t ldc,
                    float alpha, const float* bias, int accumulate) {
  float acc[kMr][kNr] = {};
  for (int64_t d = 0; d < kc; ++d, a += kMr) {
    const float* brow = b_offsets ? b + b_offsets[d] : b + d * kNr;
    for (int i = 0; i < kMr; ++i) {
      const float ai = a[i];
      for (int j = 0; j < kNr; ++j) acc[i][j] += ai * brow[j];
    }
  }
  for (int i = 0; i < kMr; ++i) {
    float* row = c + i * ldc;
    const float init = bias ? bias[i] : 0.0f;
    for (int j = 0; j < kNr; ++j) {
      const float v = alpha == 1.0f ? acc[i][j] : alpha * acc[i][j];
      row[j] = (accumulate ? row[j] : init) + v;
    }
  }
}

}  // namespace

extern const MicroKernel kGenericKernel;
const MicroKernel kGenericKernel = {kMr, kNr, kernel_generic, "generic"};

}  // namespace inq
