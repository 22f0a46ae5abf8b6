// Portable direct-path kernels (QDwArgs, qkernels.h): the semantic model of the SIMD ones.
#include <algorithm>

#include "kernels/quantize.h"

namespace inq {

// float(q(x)) - zp, the very float operations of quantize_one (and of every ISA's quantize4).
static inline float quantize_centered(float x, float scale, float zpf) {
  float f = std::nearbyint(x / scale) + zpf;
  f = f > 0.0f ? f : 0.0f;
  f = f < 255.0f ? f : 255.0f;
  return f - zpf;
}

void dw_quantize_generic(const float* x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, float scale, int32_t zp,
                         float* const* dst, int64_t ldd) {
  const float zpf = static_cast<float>(zp);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < sw && i < n; ++i) {
      if (!dst[i]) continue;
      float* d = dst[i] + r * ldd;
      const float* s = x + r * ldx;
      for (int64_t j = i, k = 0; j < n; j += sw, ++k) d[k] = quantize_centered(s[j], scale, zpf);
    }
}

void dw_conv_generic(const QDwArgs& a) {
  constexpr int64_t kBlock = 64;
  float acc[kBlock];
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t c0 = 0; c0 < a.cols; c0 += kBlock) {
      const int64_t n = std::min(kBlock, a.cols - c0);
      std::fill(acc, acc + n, 0.0f);
      const float* base = a.plane + r * a.row_step + c0;
      for (int64_t t = 0; t < a.taps; ++t) {
        const float wv = a.w[t];
        if (wv == 0.0f) continue;  // adds +0 or -0 to a sum that starts at +0: no change
        const float* s = base + a.off[t];
        for (int64_t j = 0; j < n; ++j) acc[j] += s[j] * wv;
      }
      const int64_t at = r * a.cols + c0;
      for (int64_t j = 0; j < n; ++j) {
        float v = acc[j] * a.mult;
        if (a.has_bias) v += a.bias;
        if (a.summand) v += a.summand[at + j];
        v = v < a.lo ? a.lo : v;  // std::max(v, lo)
        v = a.hi < v ? a.hi : v;  // std::min(v, hi)
        a.y[at + j] = v;
      }
    }
}

}  // namespace inq
