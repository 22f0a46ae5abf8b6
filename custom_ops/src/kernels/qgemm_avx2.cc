// AVX2 integer kernels, exact: activations widened to s16 and multiplied with vpmaddwd (s16 x s16 pairs summed
// into s32; never vpmaddubsw, whose s16 sums saturate). Weight panels hold s16 pairs (w0, w2), (w1, w3) so that
// the even bytes (c0, c2) and odd bytes (c1, c3) of each activation quad pair with them directly.
// Built with -mavx2 -mfma; only called after run-time detection.
#include <immintrin.h>

#include <cstring>

#include "kernels/quantize.h"

namespace inq {
namespace {

inline int32_t load32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// kQMR rows x 8 columns.
inline void tile8(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc) {
  __m256i acc[kQMR];
  for (int r = 0; r < kQMR; ++r) acc[r] = _mm256_setzero_si256();
  const __m256i even = _mm256_set1_epi32(0x00FF00FF);
  for (int64_t kq = 0; kq < kqn; ++kq) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + boff[kq]));
    const __m256i x02 = _mm256_and_si256(x, even), x13 = _mm256_srli_epi16(x, 8);
    const int8_t* w = a + kq * kQMR * 8;
    for (int r = 0; r < kQMR; ++r) {
      const __m256i p = _mm256_madd_epi16(x02, _mm256_set1_epi32(load32(w + 8 * r)));
      const __m256i q = _mm256_madd_epi16(x13, _mm256_set1_epi32(load32(w + 8 * r + 4)));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_add_epi32(p, q));
    }
  }
  for (int r = 0; r < kQMR; ++r) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc), acc[r]);
}

void tile(int64_t kqn, const int8_t* a, const uint8_t* b, const int64_t* boff, int32_t* c, int64_t ldc,
          int64_t ncols) {
  for (int64_t j = 0; j < ncols; j += 8) tile8(kqn, a, b + 4 * j, boff, c + j, ldc);
}

// saturated_code of 8 quotients.
inline __m256i codes8(__m256 quotient, __m256 zpf) {
  __m256 f = _mm256_round_ps(quotient, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm256_add_ps(f, zpf);
  f = _mm256_max_ps(f, _mm256_setzero_ps());  // f > 0 ? f : 0 (NaN -> 0)
  f = _mm256_min_ps(f, _mm256_set1_ps(255.0f));
  return _mm256_cvttps_epi32(f);
}
inline __m256i quantize8(__m256 x, __m256 scale, __m256 zpf) { return codes8(_mm256_div_ps(x, scale), zpf); }

void quantize4(const float* const* src, int64_t n, float scale, int32_t zp, uint32_t* dst) {
  const __m256 sv = _mm256_set1_ps(scale), zv = _mm256_set1_ps(static_cast<float>(zp));
  const __m256i zpi = _mm256_set1_epi32(zp);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256i out = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
      const __m256i q = src[i] ? quantize8(_mm256_loadu_ps(src[i] + j), sv, zv) : zpi;
      out = _mm256_or_si256(out, _mm256_slli_epi32(q, 8 * i));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), out);
  }
  if (j < n) {
    const float* tail[4];
    for (int i = 0; i < 4; ++i) tail[i] = src[i] ? src[i] + j : nullptr;
    generic_qkernels().quantize4(tail, n - j, scale, zp, dst + j);
  }
}

void minmax(const float* x, int64_t n, float* lo, float* hi) {
  __m256 l = _mm256_set1_ps(*lo), h = _mm256_set1_ps(*hi);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    l = _mm256_min_ps(v, l);  // v < l ? v : l (NaN ignored)
    h = _mm256_max_ps(v, h);
  }
  float ls[8], hs[8];
  _mm256_storeu_ps(ls, l);
  _mm256_storeu_ps(hs, h);
  generic_qkernels().minmax(ls, 8, lo, hi);
  generic_qkernels().minmax(hs, 8, lo, hi);
  generic_qkernels().minmax(x + j, n - j, lo, hi);
}

// One row's rescale (QRowEpilogue) of the 8 accumulators from column j on: the float operations of the
// scalar epilogue, shared by the float and the uint8 outputs.
class RowRescale {
 public:
  explicit RowRescale(const QRowEpilogue& e)
      : e_(e), zprs_(_mm256_set1_epi32(e.zprs)), mult_(_mm256_set1_ps(e.mult)), bias_(_mm256_set1_ps(e.bias)),
        lo_(_mm256_set1_ps(e.lo)), hi_(_mm256_set1_ps(e.hi)) {}
  __m256 operator()(const int32_t* acc, int64_t j) const {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j));
    __m256 v = _mm256_cvtepi32_ps(e_.negate ? _mm256_sub_epi32(zprs_, a) : _mm256_sub_epi32(a, zprs_));
    v = _mm256_mul_ps(v, mult_);
    if (e_.has_bias) v = _mm256_add_ps(v, bias_);
    if (e_.summand) v = _mm256_add_ps(v, _mm256_loadu_ps(e_.summand + j));
    v = _mm256_max_ps(lo_, v);  // v < lo ? lo : v, as std::max(v, lo)
    return _mm256_min_ps(hi_, v);  // hi < v ? hi : v, as std::min(v, hi)
  }

 private:
  const QRowEpilogue& e_;
  __m256i zprs_;
  __m256 mult_, bias_, lo_, hi_;
};

void epilogue(const QRowEpilogue& e, const int32_t* acc, int64_t n, float* y) {
  const RowRescale rescale(e);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, rescale(acc, j));
  if (j < n) {
    QRowEpilogue t = e;
    if (t.summand) t.summand += j;
    generic_qkernels().epilogue(t, acc + j, n - j, y + j);
  }
}

// 8 int32 values in 0..255 -> 8 bytes.
inline void store8_u8(__m256i q, uint8_t* dst) {
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(w, w));
}

void interleave4_u8(const uint8_t* const* src, int64_t n, int32_t zp, uint32_t* dst) {
  const __m256i zpi = _mm256_set1_epi32(zp);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256i out = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
      const __m256i q =
          src[i] ? _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src[i] + j))) : zpi;
      out = _mm256_or_si256(out, _mm256_slli_epi32(q, 8 * i));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), out);
  }
  if (j < n) {
    const uint8_t* tail[4];
    for (int i = 0; i < 4; ++i) tail[i] = src[i] ? src[i] + j : nullptr;
    generic_qkernels().interleave4_u8(tail, n - j, zp, dst + j);
  }
}

void epilogue_u8(const QRowEpilogue& e, const int32_t* acc, int64_t n, float scale, int32_t zp, uint8_t* y) {
  const RowRescale rescale(e);
  const __m256 inv = _mm256_set1_ps(inverse_scale(scale)), zv = _mm256_set1_ps(static_cast<float>(zp));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) store8_u8(codes8(_mm256_mul_ps(rescale(acc, j), inv), zv), y + j);
  if (j < n) {
    QRowEpilogue t = e;
    if (t.summand) t.summand += j;
    generic_qkernels().epilogue_u8(t, acc + j, n - j, scale, zp, y + j);
  }
}

void quantize_u8(const float* src, int64_t n, float scale, int32_t zp, uint8_t* dst) {
  const __m256 inv = _mm256_set1_ps(inverse_scale(scale)), zv = _mm256_set1_ps(static_cast<float>(zp));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) store8_u8(codes8(_mm256_mul_ps(_mm256_loadu_ps(src + j), inv), zv), dst + j);
  if (j < n) generic_qkernels().quantize_u8(src + j, n - j, scale, zp, dst + j);
}

void dequantize_u8(const uint8_t* src, int64_t n, float scale, int32_t zp, float* dst) {
  const __m256 sv = _mm256_set1_ps(scale);
  const __m256i zpi = _mm256_set1_epi32(zp);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + j)));
    _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(z, zpi)), sv));
  }
  if (j < n) generic_qkernels().dequantize_u8(src + j, n - j, scale, zp, dst + j);
}

}  // namespace

const QKernels& avx2_qkernels() {
  static const QKernels k{"avx2",        8,           tile,         quantize4,          minmax,
                          epilogue,      dw_quantize_avx2, dw_conv_avx2, interleave4_u8, epilogue_u8,
                          quantize_u8,   dequantize_u8, nullptr,      nullptr,
                          nullptr};
  return k;
}

}  // namespace inq
