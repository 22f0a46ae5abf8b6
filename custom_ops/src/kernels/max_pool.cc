// Max pooling row by row: the window's input rows are reduced into one padded row (padding holds the type's
// lowest value, the identity of max), then each output pixel takes the max of kw neighbours of that row.
#include "kernels/max_pool.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/clones.h"

namespace inq {

namespace {


template <class T>
INQ_BYTE_CLONES void max_into(const T* __restrict src, int64_t n, T* __restrict dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = std::max(dst[j], src[j]);
}

// out[j] = max(v[2j], v[2j+1], v[2j+2]): the 3x3 / stride-2 pooling of ResNet stems, vectorized by permutes.
template <class T>
INQ_BYTE_CLONES void row_max_k3s2(const T* __restrict v, int64_t n, T* __restrict out) {
  for (int64_t j = 0; j < n; ++j) out[j] = std::max(std::max(v[2 * j], v[2 * j + 1]), v[2 * j + 2]);
}

template <class T>
void row_max(const T* v, int64_t n, int64_t kw, int64_t sw, T* out) {
  if (kw == 3 && sw == 2) return row_max_k3s2(v, n, out);
  for (int64_t j = 0; j < n; ++j) {
    const T* s = v + j * sw;
    T m = s[0];
    for (int64_t t = 1; t < kw; ++t) m = std::max(m, s[t]);
    out[j] = m;
  }
}

template <class T>
void pool_planes(const PoolGeometry& p, const T* x, T* y, const TaskRunner& runner) {
  const T lowest = std::numeric_limits<T>::lowest();
  // The padded row reaches every column a window reads: (ow - 1) * sw + kw, at least pad_l + w.
  const int64_t wp = std::max((p.ow - 1) * p.sw + p.kw, p.pad_l + p.w);
  // Tasks of whole planes: about 4 per thread of a two-thread pool, at least one plane each.
  const int64_t per = std::max<int64_t>(1, p.planes / 8);
  const int64_t tasks = (p.planes + per - 1) / per;
  runner.run(static_cast<size_t>(tasks), [&](size_t t) {
    std::vector<T> row(static_cast<size_t>(wp), lowest);  // the padding columns are never written
    const int64_t c0 = static_cast<int64_t>(t) * per, c1 = std::min(p.planes, c0 + per);
    for (int64_t c = c0; c < c1; ++c) {
      const T* xp = x + c * p.h * p.w;
      T* yp = y + c * p.oh * p.ow;
      for (int64_t oh = 0; oh < p.oh; ++oh) {
        const int64_t i0 = std::max<int64_t>(0, oh * p.sh - p.pad_t);
        const int64_t i1 = std::min(p.h, oh * p.sh - p.pad_t + p.kh);
        T* r = row.data() + p.pad_l;
        std::copy(xp + i0 * p.w, xp + (i0 + 1) * p.w, r);
        for (int64_t i = i0 + 1; i < i1; ++i) max_into(xp + i * p.w, p.w, r);
        row_max(row.data(), p.ow, p.kw, p.sw, yp + oh * p.ow);
      }
    }
  });
}

}  // namespace

std::string pool_output_size(PoolGeometry* p) {
  if (p->kh < 1 || p->kw < 1 || p->sh < 1 || p->sw < 1) return "pool kernel and strides must be positive";
  if (p->pad_t < 0 || p->pad_l < 0 || p->pad_b < 0 || p->pad_r < 0) return "pool pads must not be negative";
  if (p->pad_t >= p->kh || p->pad_b >= p->kh || p->pad_l >= p->kw || p->pad_r >= p->kw)
    return "pool pads must be smaller than the pool kernel";
  const int64_t hp = p->h + p->pad_t + p->pad_b, wp = p->w + p->pad_l + p->pad_r;
  if (hp < p->kh || wp < p->kw) return "the pool kernel is larger than the padded input";
  p->oh = (hp - p->kh) / p->sh + 1;
  p->ow = (wp - p->kw) / p->sw + 1;
  return {};
}

void max_pool(const PoolGeometry& p, const float* x, float* y, const TaskRunner& runner) {
  pool_planes(p, x, y, runner);
}

void max_pool(const PoolGeometry& p, const uint8_t* x, uint8_t* y, const TaskRunner& runner) {
  pool_planes(p, x, y, runner);
}

}  // namespace inq
