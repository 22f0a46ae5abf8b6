// Summand and activation over blocks of output rows, after the GEMM has added the bias.
#include "kernels/epilogue.h"

#include "kernels/clones.h"

namespace inq {

INQ_CLONES
void finish_rows(const Epilogue& ep, const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows,
                 int64_t cols, const float* summand, int64_t ldz) {
  const float lo = ep.lower(), hi = ep.upper();
  const bool clamp = ep.activation != Activation::kNone;
  for (int64_t i = 0; i < rows; ++i) {
    const float* __restrict s = src + i * lds;
    float* __restrict d = dst + i * ldd;
    const float* __restrict z = summand ? summand + i * ldz : nullptr;
    if (z && clamp) {
      for (int64_t j = 0; j < cols; ++j) d[j] = std::min(std::max(s[j] + z[j], lo), hi);
    } else if (z) {
      for (int64_t j = 0; j < cols; ++j) d[j] = s[j] + z[j];
    } else if (clamp) {
      for (int64_t j = 0; j < cols; ++j) d[j] = std::min(std::max(s[j], lo), hi);
    } else if (d != s) {
      for (int64_t j = 0; j < cols; ++j) d[j] = s[j];
    }
  }
}

}  // namespace inq
