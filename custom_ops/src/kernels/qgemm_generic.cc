// Portable scalar integer kernels (any CPU); also the semantic model the SIMD paths reproduce bit for bit.
#include <cstring>

#include "kernels/quantize.h"

namespace inq {
namespace {

void tile(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc,
          int64_t ncols) {
  for (int r = 0; r < kQMR; ++r) std::memset(c + r * ldc, 0, static_cast<size_t>(ncols) * sizeof(int32_t));
  for (int64_t kq = 0; kq < kqn; ++kq) {
    const int8_t* w = a + kq * kQMR * 4;
    const uint8_t* x = b + boff[kq];
    for (int r = 0; r < kQMR; ++r) {
      const int32_t w0 = w[r * 4], w1 = w[r * 4 + 1], w2 = w[r * 4 + 2], w3 = w[r * 4 + 3];
      if ((w0 | w1 | w2 | w3) == 0) continue;
      int32_t* cr = c + r * ldc;
      for (int64_t j = 0; j < ncols; ++j)
        cr[j] += w0 * x[4 * j] + w1 * x[4 * j + 1] + w2 * x[4 * j + 2] + w3 * x[4 * j + 3];
    }
  }
}

void quantize4(const float* const* src, int64_t n, float scale, int32_t zp, uint32_t* dst) {
  const float zpf = static_cast<float>(zp);
  uint8_t* d = reinterpret_cast<uint8_t*>(dst);
  for (int i = 0; i < 4; ++i) {
    const float* s = src[i];
    if (!s) {
      for (int64_t j = 0; j < n; ++j) d[4 * j + i] = static_cast<uint8_t>(zp);
      continue;
    }
    for (int64_t j = 0; j < n; ++j) d[4 * j + i] = quantize_one(s[j], scale, zpf);
  }
}

void minmax(const float* x, int64_t n, float* lo, float* hi) {
  float l = *lo, h = *hi;
  for (int64_t i = 0; i < n; ++i) {
    l = x[i] < l ? x[i] : l;
    h = x[i] > h ? x[i] : h;
  }
  *lo = l, *hi = h;
}

void epilogue(const QRowEpilogue& e, const int32_t* acc, int64_t n, float* y) {
  for (int64_t j = 0; j < n; ++j) {
    float v = static_cast<float>(e.negate ? e.zprs - acc[j] : acc[j] - e.zprs) * e.mult;
    if (e.has_bias) v += e.bias;
    if (e.summand) v += e.summand[j];
    v = v < e.lo ? e.lo : v;  // std::max(v, lo)
    v = e.hi < v ? e.hi : v;  // std::min(v, hi)
    y[j] = v;
  }
}

void interleave4_u8(const uint8_t* const* src, int64_t n, int32_t zp, uint32_t* dst) {
  uint8_t* d = reinterpret_cast<uint8_t*>(dst);
  for (int i = 0; i < 4; ++i) {
    const uint8_t* s = src[i];
    if (!s) {
      for (int64_t j = 0; j < n; ++j) d[4 * j + i] = static_cast<uint8_t>(zp);
      continue;
    }
    for (int64_t j = 0; j < n; ++j) d[4 * j + i] = s[j];
  }
}

void epilogue_u8(const QRowEpilogue& e, const int32_t* acc, int64_t n, float scale, int32_t zp, uint8_t* y) {
  const float zpf = static_cast<float>(zp), inv = inverse_scale(scale);
  float v[64];
  for (int64_t j = 0; j < n; j += 64) {
    const int64_t len = n - j < 64 ? n - j : 64;
    QRowEpilogue t = e;
    if (t.summand) t.summand += j;
    epilogue(t, acc + j, len, v);
    for (int64_t i = 0; i < len; ++i) y[j + i] = requantize_one(v[i], inv, zpf);
  }
}

void quantize_u8(const float* src, int64_t n, float scale, int32_t zp, uint8_t* dst) {
  const float zpf = static_cast<float>(zp), inv = inverse_scale(scale);
  for (int64_t j = 0; j < n; ++j) dst[j] = requantize_one(src[j], inv, zpf);
}

void dequantize_u8(const uint8_t* src, int64_t n, float scale, int32_t zp, float* dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(static_cast<int32_t>(src[j]) - zp) * scale;
}

}  // namespace

namespace {

void sparse_add(const int32_t* kq, const uint32_t* w4, int64_t n, const uint8_t* b, const int64_t* boff, int32_t* c,
                int64_t ncols) {
  for (int64_t e = 0; e < n; ++e) {
    const uint8_t* x = b + boff[kq[e]];
    for (int i = 0; i < 4; ++i) {
      const int32_t w = static_cast<int8_t>(static_cast<uint8_t>(w4[e] >> (8 * i)));
      if (w == 0) continue;
      for (int64_t j = 0; j < ncols; ++j) c[j] += w * x[4 * j + i];
    }
  }
}

}  // namespace

const QKernels& generic_qkernels() {
  static const QKernels k{"generic",       4,           tile,           quantize4,          minmax,
                          epilogue,        dw_quantize_generic, dw_conv_generic, interleave4_u8, epilogue_u8,
                          quantize_u8,     dequantize_u8, nullptr,         sparse_add,
                          nullptr};
  return k;
}

}  // namespace inq
