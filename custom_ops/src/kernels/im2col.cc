// Packs convolution B panels directly from the image: each panel row is a few runs of consecutive output
// positions along one output row, copied (stride 1) or gathered (stride > 1) with zero padding at the borders.
#include "kernels/im2col.h"

#include <algorithm>

namespace inq {
namespace {

struct Run {
  int64_t dst;  // offset inside the panel row
  int64_t oh, ow, len;
};

}  // namespace

const float* Im2colPanels::panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                                  int64_t* panel_stride) const {
  const ConvGeometry& g = g_;
  const int64_t ksize = g.kh * g.kw;
  Run runs[64];
  float* out = scratch;
  for (int64_t p0 = r0; p0 < r0 + rn; p0 += width, out += dn * width) {
    const int64_t cnt = std::min<int64_t>(width, r0 + rn - p0);
    // Split the panel's output positions into runs along output rows.
    int nruns = 0;
    for (int64_t q = 0; q < cnt;) {
      const int64_t p = p0 + q;
      const int64_t oh = p / g.ow, ow = p % g.ow;
      const int64_t len = std::min(cnt - q, g.ow - ow);
      runs[nruns++] = {q, oh, ow, len};
      q += len;
      if (nruns == 64) break;  // cannot happen for width <= 64
    }
    int64_t c = d0 / ksize, rem = d0 % ksize;
    int64_t ki = rem / g.kw, kj = rem % g.kw;
    for (int64_t d = 0; d < dn; ++d) {
      float* row = out + d * width;
      const float* plane = x_ + c * g.h * g.w;
      for (int r = 0; r < nruns; ++r) {
        const Run& run = runs[r];
        float* dst = row + run.dst;
        const int64_t ih = run.oh * g.sh - g.pad_t + ki * g.dh;
        if (ih < 0 || ih >= g.h) {
          for (int64_t t = 0; t < run.len; ++t) dst[t] = 0.0f;
          continue;
        }
        const float* src = plane + ih * g.w;
        const int64_t iw0 = run.ow * g.sw - g.pad_l + kj * g.dw;
        if (g.sw == 1) {
          const int64_t lo = std::min(run.len, std::max<int64_t>(0, -iw0));
          const int64_t hi = std::max(lo, std::min(run.len, g.w - iw0));
          for (int64_t t = 0; t < lo; ++t) dst[t] = 0.0f;
          const float* s = src + iw0;
          for (int64_t t = lo; t < hi; ++t) dst[t] = s[t];
          for (int64_t t = hi; t < run.len; ++t) dst[t] = 0.0f;
        } else {
          for (int64_t t = 0; t < run.len; ++t) {
            const int64_t iw = iw0 + t * g.sw;
            dst[t] = (iw >= 0 && iw < g.w) ? src[iw] : 0.0f;
          }
        }
      }
      for (int64_t t = cnt; t < width; ++t) row[t] = 0.0f;
      if (++kj == g.kw) {
        kj = 0;
        if (++ki == g.kh) {
          ki = 0;
          ++c;
        }
      }
    }
  }
  *panel_stride = dn * width;
  return scratch;
}

}  // namespace inq
