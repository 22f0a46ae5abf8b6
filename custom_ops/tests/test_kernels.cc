// Native checks of the kernel math without onnxruntime: packed-code decoding, GEMM against a naive product for
// every compiled-in micro-kernel, convolution (im2col, 1x1, depthwise, grouped) against a naive convolution.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/packed_weights.h"
#include "kernels/sgemm.h"
#include "native_check.h"

using namespace inq;

// Within float rounding of `want`, relative to its largest magnitude (or to `scale` when the values were clipped).
static bool close(const std::vector<float>& got, const std::vector<float>& want, double scale = 0) {
  for (float v : want) scale = std::fmax(scale, std::fabs(v));
  for (size_t i = 0; i < got.size(); ++i)
    if (std::fabs(got[i] - want[i]) > 1e-5 * scale + 1e-5 * std::fabs(want[i]) + 1e-7) return false;
  return got.size() == want.size();
}

static void test_decode() {
  // Codes 0..15 at 4 bits, packed LSB first: bytes (c0 | c1 << 4), ...
  std::vector<uint8_t> packed;
  for (int c = 0; c < 16; c += 2) packed.push_back(static_cast<uint8_t>(c | ((c + 1) << 4)));
  std::vector<float> out(16);
  std::string err = decode_weights(packed.data(), 8, 4, {16}, {-3}, 0, out.data());
  CHECK(err.empty(), "decode: %s", err.c_str());
  for (int c = 0; c < 16; ++c) {
    const int m = c & 7;
    const float want = m == 0 ? 0.0f : ((c & 8) ? -1.0f : 1.0f) * std::ldexp(1.0f, -3 + m - 1);
    CHECK(out[c] == want, "code %d decodes to %g, want %g", c, out[c], want);
  }
  // 3-bit codes straddling bytes, per-channel base along axis 1 of a (2, 3) tensor.
  const unsigned codes[6] = {1, 2, 3, 5, 6, 7};
  std::vector<uint8_t> p3(3, 0);
  for (int i = 0; i < 6; ++i)
    for (int b = 0; b < 3; ++b)
      if ((codes[i] >> b) & 1) p3[(i * 3 + b) / 8] |= static_cast<uint8_t>(1u << ((i * 3 + b) % 8));
  std::vector<float> o3(6);
  err = decode_weights(p3.data(), 3, 3, {2, 3}, {0, 1, 2}, 1, o3.data());
  CHECK(err.empty(), "decode 3-bit: %s", err.c_str());
  for (int i = 0; i < 6; ++i) {
    const float want = decode_code(codes[i], 3, i % 3);
    CHECK(o3[i] == want, "3-bit element %d: %g vs %g", i, o3[i], want);
  }
  CHECK(decode_code(4, 3, 0) == 0.0f, "negative zero code must decode to 0");
  // Extreme bases: defined (no overflow), +-inf / 0 as ldexp gives.
  CHECK(std::isinf(decode_code(7, 4, INT64_MAX)) && decode_code(7, 4, INT64_MIN) == 0.0f, "extreme exponent_base");
  CHECK(check_exponent_base({-1000, 1000}).empty() && !check_exponent_base({0, 1001}).empty(), "base range");
  CHECK(check_packed_size(10, 4, {30000, 30000}).find("need 450000000") != std::string::npos, "packed size");
  CHECK(!check_packed_size(10, 4, {int64_t{1} << 40, int64_t{1} << 40}).empty(), "element count overflow");
  // Size errors name the sizes.
  err = decode_weights(p3.data(), 2, 3, {2, 3}, {0}, 0, o3.data());
  CHECK(err.find("2 bytes") != std::string::npos && err.find("need 3") != std::string::npos, "%s", err.c_str());
  err = decode_weights(p3.data(), 3, 3, {2, 3}, {0, 1}, 1, o3.data());
  CHECK(err.find("exponent_base has 2 values") != std::string::npos, "%s", err.c_str());
}

static void test_gemm(const MicroKernel& uk) {
  const ScratchPool pool;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {8, 48, 16}, {33, 300, 97}, {200, 70, 130}, {5, 600, 9}};
  for (auto& s : shapes) {
    const int64_t m = s[0], k = s[1], n = s[2];
    std::vector<float> a(m * k), b(k * n), bias(m), c(m * n), want(m * n);
    for (auto& v : a) v = nd(rng);
    for (auto& v : b) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < k; ++d) acc += double(a[i * k + d]) * b[d * n + j];
        want[i * n + j] = static_cast<float>(bias[i] + 0.5 * acc);
      }
    // A pre-packed, B packed on the fly.
    PrepackedPanels ap;
    ap.pack(a.data(), k, 1, m, k, uk.mr);
    StridedPanels bs(b.data(), 1, n);
    GemmArgs g;
    g.scratch = &pool;
    g.m = m, g.n = n, g.k = k, g.a = &ap, g.b = &bs, g.c = c.data(), g.ldc = n, g.alpha = 0.5f;
    g.row_bias = bias.data();
    gemm(uk, g);
    CHECK(close(c, want), "gemm %s %lldx%lldx%lld (prepacked A)", uk.name, (long long)m, (long long)k, (long long)n);
    // A strided, B pre-packed, accumulating onto C = bias.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * n + j] = bias[i];
    StridedPanels as(a.data(), k, 1);
    PrepackedPanels bp;
    bp.pack(b.data(), 1, n, n, k, uk.nr);
    g.a = &as, g.b = &bp, g.row_bias = nullptr, g.accumulate = true;
    gemm(uk, g);
    CHECK(close(c, want), "gemm %s %lldx%lldx%lld (prepacked B)", uk.name, (long long)m, (long long)k, (long long)n);
  }
}

static void naive_conv(const ConvGeometry& g, const std::vector<float>& x, const std::vector<float>& w,
                       const std::vector<float>& bias, std::vector<float>* y) {
  const int64_t cg = g.cg(), mg = g.mg();
  y->assign(g.n * g.m * g.oh * g.ow, 0.0f);
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t oc = 0; oc < g.m; ++oc)
      for (int64_t oh = 0; oh < g.oh; ++oh)
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          double acc = bias[oc];
          const int64_t grp = oc / mg;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t ki = 0; ki < g.kh; ++ki)
              for (int64_t kj = 0; kj < g.kw; ++kj) {
                const int64_t ih = oh * g.sh - g.pad_t + ki * g.dh, iw = ow * g.sw - g.pad_l + kj * g.dw;
                if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                acc += double(x[((n * g.c + grp * cg + c) * g.h + ih) * g.w + iw]) *
                       w[((oc * cg + c) * g.kh + ki) * g.kw + kj];
              }
          (*y)[((n * g.m + oc) * g.oh + oh) * g.ow + ow] = static_cast<float>(acc);
        }
}

static void test_conv(const MicroKernel& uk) {
  struct Case {
    int64_t n, c, h, w, m, group, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
  };
  const Case cases[] = {
      {1, 3, 9, 9, 8, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},      // im2col, padded
      {2, 16, 7, 11, 24, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},   // 1x1 GEMM path
      {1, 8, 12, 12, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0},    // depthwise, strided
      {2, 8, 10, 9, 12, 4, 3, 2, 1, 2, 2, 1, 2, 0, 1, 1},    // grouped, dilated, strided
      {1, 32, 30, 30, 64, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},  // multi-block
      {1, 4, 1, 40, 6, 2, 1, 5, 1, 3, 1, 2, 0, 2, 0, 1},     // 1-D
      {1, 3, 11, 11, 4, 1, 3, 3, 4, 4, 1, 1, -1, -2, -1, -2},  // negative pads (SAME crop), implicit path
      {1, 3, 11, 11, 4, 1, 2, 2, 17, 17, 1, 1, -3, -3, -6, -6},  // stride > input: im2col path
      {2, 5, 9, 300, 6, 1, 3, 3, 1, 97, 1, 1, 1, 1, 1, 1},   // wide stride: im2col path
      {1, 4, 1, 50, 6, 1, 1, 3, 1, 1, 1, 20, 0, 0, 0, 0},    // large dilation, small output: im2col path
      {1, 64, 7, 7, 112, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},   // small plane: pixel-rows path, channel edge
      {2, 24, 9, 9, 100, 2, 3, 3, 2, 2, 1, 1, 1, 0, 1, 1},   // pixel-rows, grouped, strided, batch 2
      {1, 40, 5, 5, 64, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},    // pixel-rows 1x1
      // Depthwise 3x3 read straight from x (AVX-512): rows not a multiple of 4, columns past one vector.
      {1, 5, 20, 37, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
      {2, 6, 23, 35, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},    // stride 2, odd width
      {1, 4, 16, 34, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1},    // stride 2, padding at the end only
      {1, 3, 10, 18, 3, 3, 3, 3, 1, 1, 1, 1, 2, 2, 2, 2},    // pads wider than the kernel
      {1, 3, 9, 40, 3, 3, 3, 3, 1, 1, 1, 1, -1, 2, 0, -2},   // negative pads
      {1, 7, 7, 7, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},      // 7x7 plane
      // Depthwise on phase planes: dilation, 5x5, stride 3.
      {1, 4, 13, 21, 4, 4, 5, 5, 1, 1, 2, 2, 4, 4, 4, 4},
      {1, 3, 14, 30, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1},
      {1, 2, 12, 33, 2, 2, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1},    // unequal strides
      // 1x1 strided: the used pixels gathered, then the stride-1 paths.
      {1, 24, 14, 15, 40, 1, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0},  // 7x8 output: pixel rows
      {2, 16, 30, 29, 24, 2, 1, 1, 2, 3, 1, 1, 0, 0, 0, 0},  // 15x10 output, grouped: pointwise GEMM
      {1, 8, 9, 9, 16, 1, 1, 1, 2, 2, 1, 1, 0, 0, -1, -1},   // cropped end
      // Implicit GEMM with exact columns (B panels gathered without the dropped columns, output in place).
      {1, 8, 20, 20, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},   // 20-wide rows: two pieces per vector
      {2, 8, 14, 14, 20, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},   // 14-wide rows: up to three, batch 2
      {1, 6, 24, 23, 16, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},   // stride 2, 12x12 output
      {1, 8, 300, 9, 10, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},   // 9-wide rows, several column blocks
      // Output-row pixel GEMM (A panels of one output row's positions, the kernel's exact row variants).
      {1, 16, 14, 14, 56, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},  // 14x14: panels of 7 read in place, channel edge
      {1, 16, 14, 14, 64, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},  // stride 2 to 7x7: packed panels
      {1, 24, 8, 8, 48, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    // 8x8: full panels
      {1, 8, 14, 14, 48, 1, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2},   // dilated
      {2, 16, 7, 7, 100, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},   // grouped, batch 2, 50 channels per group
      {1, 16, 9, 9, 64, 1, 3, 3, 1, 1, 1, 1, -1, 0, 0, 0},   // negative pad: 6x7 output
      {1, 24, 14, 14, 48, 1, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0},  // 1x1 strided to 7x7
      // Winograd F(2x2, 3x3): 3x3 stride 1, one group, even outputs from 12x12.
      {1, 16, 28, 28, 32, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},  // 196 tiles: five blocks, the last partial
      {2, 24, 12, 16, 20, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},  // batch 2, 12x16, channels not a multiple of 8
      {1, 16, 13, 13, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0},  // pads at the start only: 12x12
      {1, 17, 18, 20, 24, 1, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0},  // no padding: 16x18
      {1, 16, 60, 60, 16, 1, 3, 3, 1, 1, 1, 1, 2, 1, 0, 1},  // uneven pads: 60x60, 900 tiles
      {3, 32, 14, 14, 64, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},  // 49 tiles an image, batch 3
  };
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  for (const Case& cs : cases) {
    ConvGeometry g;
    g.n = cs.n, g.c = cs.c, g.h = cs.h, g.w = cs.w, g.m = cs.m, g.group = cs.group, g.kh = cs.kh, g.kw = cs.kw;
    g.sh = cs.sh, g.sw = cs.sw, g.dh = cs.dh, g.dw = cs.dw, g.pad_t = cs.pt, g.pad_l = cs.pl, g.pad_b = cs.pb;
    g.pad_r = cs.pr;
    std::vector<int64_t> out, pads;
    const std::string err = conv_output_shape({g.h, g.w}, {g.kh, g.kw}, {g.sh, g.sw}, {g.dh, g.dw},
                                              {g.pad_t, g.pad_l, g.pad_b, g.pad_r}, AutoPad::kNotSet, &out, &pads);
    CHECK(err.empty(), "%s", err.c_str());
    g.oh = out[0], g.ow = out[1];
    std::vector<float> x(g.n * g.c * g.h * g.w), w(g.m * g.cg() * g.kh * g.kw), bias(g.m), y, want;
    for (auto& v : x) v = nd(rng);
    for (auto& v : w) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    ConvWeights cw;
    cw.prepare(uk, g.m, g.group, g.cg(), g.kh, g.kw, w);
    std::vector<float> z(g.n * g.m * g.oh * g.ow);
    for (auto& v : z) v = nd(rng);
    // Fused epilogues: none; residual summand then Relu; Clip alone.
    for (int variant = 0; variant < 3; ++variant) {
      Epilogue ep;
      ep.bias = bias.data();
      if (variant == 1) ep.summand = z.data(), ep.activation = Activation::kRelu;
      if (variant == 2) ep.activation = Activation::kClip, ep.clip_min = -0.5f, ep.clip_max = 0.75f;
      y.assign(g.n * g.m * g.oh * g.ow, -1.0f);
      conv_forward(g, cw, x.data(), ep, y.data(), TaskRunner());
      naive_conv(g, x, w, bias, &want);
      double scale = 0;  // of the values before the activation clipped them
      for (size_t i = 0; i < want.size(); ++i) scale = std::fmax(scale, std::fabs(want[i]) + std::fabs(z[i]));
      const int64_t plane = g.oh * g.ow;
      for (size_t i = 0; i < want.size(); ++i) {
        Epilogue rest = ep;
        rest.bias = nullptr;  // naive_conv added it
        want[i] = rest.apply(want[i], static_cast<int64_t>(i) / plane % g.m, static_cast<int64_t>(i));
      }
      CHECK(close(y, want, scale), "conv %s c=%lld m=%lld group=%lld k=%lldx%lld epilogue %d", uk.name, (long long)g.c,
            (long long)g.m, (long long)g.group, (long long)g.kh, (long long)g.kw, variant);
    }
  }
}

// The Winograd path split for more threads than the batch has blocks: the blocks' transformed input made in a
// pass of its own and shared by tasks over parts of the output channels (several images per pass).
static void test_winograd_shared_pass(const MicroKernel& uk) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (const int64_t n : {1, 3}) {
    ConvGeometry g;
    g.n = n, g.c = 24, g.h = g.w = 14, g.m = 40, g.kh = g.kw = 3, g.pad_t = g.pad_l = g.pad_b = g.pad_r = 1;
    g.oh = g.ow = 14;
    CHECK(winograd_suits(g), "14x14 3x3 takes the Winograd path");
    std::vector<float> x(n * g.c * 196), w(g.m * g.c * 9), bias(g.m), z(n * g.m * 196), want, y(z.size());
    for (auto& v : x) v = nd(rng);
    for (auto& v : w) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    for (auto& v : z) v = nd(rng);
    ConvWeights cw;
    cw.prepare(uk, g.m, 1, g.c, 3, 3, w);
    Epilogue ep;
    ep.bias = bias.data(), ep.summand = z.data(), ep.activation = Activation::kRelu;
    conv_winograd(g, uk, cw.winograd(), cw.pool(), x.data(), ep, y.data(), TaskRunner(), 8);
    naive_conv(g, x, w, bias, &want);
    double scale = 0;
    for (size_t i = 0; i < want.size(); ++i) scale = std::fmax(scale, std::fabs(want[i]) + std::fabs(z[i]));
    for (size_t i = 0; i < want.size(); ++i) want[i] = std::max(0.0f, want[i] + z[i]);
    CHECK(close(y, want, scale), "winograd shared pass %s batch %lld", uk.name, (long long)n);
  }
}

static void test_auto_pad() {
  std::vector<int64_t> out, pads;
  // in 10, k 4, s 2: out 5, total pad (5-1)*2 + 4 - 10 = 2 -> 1/1; in 9, k 3, s 2: out 5, total 2.
  conv_output_shape({10, 9}, {4, 3}, {2, 2}, {1, 1}, {0, 0, 0, 0}, AutoPad::kSameUpper, &out, &pads);
  CHECK(out == std::vector<int64_t>({5, 5}) && pads == std::vector<int64_t>({1, 1, 1, 1}), "SAME_UPPER even");
  // in 8, k 4, s 1: total 3 -> UPPER 1 + 2, LOWER 2 + 1.
  conv_output_shape({8}, {4}, {1}, {1}, {0, 0}, AutoPad::kSameUpper, &out, &pads);
  CHECK(out[0] == 8 && pads[0] == 1 && pads[1] == 2, "SAME_UPPER odd");
  conv_output_shape({8}, {4}, {1}, {1}, {0, 0}, AutoPad::kSameLower, &out, &pads);
  CHECK(out[0] == 8 && pads[0] == 2 && pads[1] == 1, "SAME_LOWER odd");
  // Negative totals crop the input as onnxruntime 1.32 does. k 1, s 3, in 6: total 3 + 1 - 6 = -2.
  conv_output_shape({6}, {1}, {3}, {1}, {0, 0}, AutoPad::kSameUpper, &out, &pads);
  CHECK(out[0] == 2 && pads[0] == 0 && pads[1] == -2, "SAME_UPPER negative total");
  // in 11, k 4, s 17: total 4 - 11 = -7 -> UPPER -3 / -4, LOWER -2 / -5.
  conv_output_shape({11}, {4}, {17}, {1}, {0, 0}, AutoPad::kSameUpper, &out, &pads);
  CHECK(out[0] == 1 && pads[0] == -3 && pads[1] == -4, "SAME_UPPER stride > input");
  conv_output_shape({11}, {4}, {17}, {1}, {0, 0}, AutoPad::kSameLower, &out, &pads);
  CHECK(out[0] == 1 && pads[0] == -2 && pads[1] == -5, "SAME_LOWER stride > input");
  // Sizes that overflow int64 are errors naming the values, not wrapped results.
  std::string oerr = conv_output_shape({8}, {5}, {1}, {int64_t{1} << 62}, {0, 0}, AutoPad::kNotSet, &out, &pads);
  CHECK(oerr.find("overflows") != std::string::npos && oerr.find("4611686018427387904") != std::string::npos,
        "dilation overflow: %s", oerr.c_str());
  oerr = conv_output_shape({INT64_MAX - 1}, {1}, {1}, {1}, {4, 4}, AutoPad::kNotSet, &out, &pads);
  CHECK(oerr.find("overflows") != std::string::npos, "pads overflow: %s", oerr.c_str());
  const std::string err = conv_output_shape({2}, {3}, {1}, {1}, {0, 0}, AutoPad::kValid, &out, &pads);
  CHECK(err.find("not positive") != std::string::npos, "VALID too small: %s", err.c_str());
}

int main() {
  test_decode();
  test_auto_pad();
  for (const char* name : {"generic", "avx2", "avx512"}) {
    const MicroKernel* uk = kernel_by_name(name);
    if (!uk) {
      std::printf("skip %s kernel (not supported here)\n", name);
      continue;
    }
    test_gemm(*uk);
    test_conv(*uk);
    test_winograd_shared_pass(*uk);
    std::printf("checked %s kernel (%dx%d)\n", name, uk->mr, uk->nr);
  }
  std::printf("active kernel: %s\n", active_kernel().name);
  if (g_failures) std::printf("%d failure(s)\n", g_failures);
  return g_failures ? 1 : 0;
}
